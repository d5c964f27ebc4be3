//! The idempotency guard of `dedup` handlers (see
//! [`HandlerOptions::dedup`](crate::HandlerOptions::dedup)): the key of a mark, the probe made
//! when such a handler is subscribed, and the check and the mark the dispatcher runs around a
//! handler call, with what happens when the transport fails. Where `dedup` may be used at all
//! is a rule of the options (`options.rs`).

use std::time::Duration;

use crate::engine::Engine;
use crate::error::Result;

/// The mark of event `id` handled by `group` on `channel` (the event's channel without the
/// namespace): `<namespace.>eventbus.dedup:<channel>:<group>:<id>`.
pub(crate) fn key(prefix: &str, channel: &str, group: &str, id: &str) -> String {
    format!("{prefix}eventbus.dedup:{channel}:{group}:{id}")
}

/// Fails when the transport cannot keep marks (or its user may not read them), so that a
/// `dedup` handler fails at subscribe time instead of at every delivery.
pub(crate) async fn probe(engine: &Engine, key: &str) -> Result<()> {
    engine.transport().dedup_seen(key).await.map(drop)
}

/// True when the group handled this event already. A failed check counts as "not handled":
/// the handler is called, so at least once still holds.
pub(crate) async fn seen(engine: &Engine, key: &str, handler: &str) -> bool {
    match engine.transport().dedup_seen(key).await {
        Ok(seen) => seen,
        Err(e) => {
            tracing::warn!(%handler, %key, error = %e, "cannot check the dedup mark; calling the handler");
            false
        }
    }
}

/// Remembers that the group handled this event. A failed mark is logged; the entry is acked
/// anyway (keeping it pending would have it handled again for sure).
pub(crate) async fn mark(engine: &Engine, key: &str, ttl: Duration, handler: &str) {
    if let Err(e) = engine.transport().dedup_mark(key, ttl).await {
        tracing::warn!(%handler, %key, error = %e, "cannot write the dedup mark; a redelivery of this event would be handled again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_names_namespace_channel_group_and_id() {
        assert_eq!(
            key("staging.", "shop.OrderCreated", "billing", "e-1"),
            "staging.eventbus.dedup:shop.OrderCreated:billing:e-1"
        );
        assert_eq!(
            key("", "shop.OrderCreated", "billing", "1700000000000-0"),
            "eventbus.dedup:shop.OrderCreated:billing:1700000000000-0"
        );
    }
}
