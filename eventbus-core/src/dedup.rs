//! The idempotency guard of `dedup` handlers (see [`HandlerOptions::dedup`]): the key of a
//! mark, the checks made when such a handler is subscribed, and the check and the mark the
//! dispatcher runs around a handler call, with what happens when the transport fails.

use std::time::Duration;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Durability, EventDescriptor};
use crate::handler::HandlerOptions;
use crate::transport::ConsumeMode;

/// The mark of event `id` handled by `group` on `channel` (the event's channel without the
/// namespace): `<namespace.>eventbus.dedup:<channel>:<group>:<id>`.
pub(crate) fn key(prefix: &str, channel: &str, group: &str, id: &str) -> String {
    format!("{prefix}eventbus.dedup:{channel}:{group}:{id}")
}

/// Refuses `dedup` where there is no group to remember handled events for: ephemeral events
/// (pub/sub has no redelivery) and broadcast handlers (no group, nothing acked).
pub(crate) fn check_options(
    handler: &str,
    event: &EventDescriptor,
    options: &HandlerOptions,
) -> Result<()> {
    if options.dedup.is_none() {
        return Ok(());
    }
    if event.durability == Durability::Ephemeral {
        return Err(Error::InvalidOptions {
            handler: handler.to_owned(),
            reason: format!(
                "`dedup` needs a durable event, and {} ({}) is ephemeral: pub/sub delivers at \
                 most once and never redelivers; drop `dedup`",
                event.rust_type, event.name
            ),
        });
    }
    if options.mode == ConsumeMode::Broadcast {
        return Err(Error::InvalidOptions {
            handler: handler.to_owned(),
            reason: "`dedup` remembers what a consumer group handled, and a `broadcast` handler \
                     has no group; drop `dedup` or `broadcast`"
                .to_owned(),
        });
    }
    Ok(())
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

    #[test]
    fn dedup_is_refused_without_a_group() {
        let durable = EventDescriptor {
            durability: Durability::Durable,
            ..test_descriptor()
        };
        let ephemeral = EventDescriptor {
            durability: Durability::Ephemeral,
            ..test_descriptor()
        };
        let on = HandlerOptions::new().dedup(Duration::from_secs(1));
        assert!(check_options("h", &durable, &on).is_ok());
        assert!(check_options("h", &ephemeral, &HandlerOptions::new()).is_ok());
        let e = check_options("h", &ephemeral, &on).unwrap_err().to_string();
        assert!(e.contains("`dedup` needs a durable event"), "{e}");
        let e = check_options("h", &durable, &on.broadcast())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`broadcast` handler has no group"), "{e}");
    }

    fn test_descriptor() -> EventDescriptor {
        EventDescriptor {
            name: "shop.OrderCreated",
            channel: "shop.OrderCreated",
            pattern: "shop.OrderCreated",
            rust_type: "shop::OrderCreated",
            durability: Durability::Durable,
            version: 1,
            max_len: None,
            reply: None,
        }
    }
}
