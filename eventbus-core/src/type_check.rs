//! Which CloudEvents `type` a handler takes: the name of its event type, so that a message of
//! another type on the same channel or stream (a foreign producer's mistake, two types sharing a
//! channel) is refused with a reason instead of being parsed into the wrong struct, whose
//! optional fields might well accept it.
//!
//! Not checked, because there is nothing stable to compare:
//!
//! * a bare payload (no envelope, so no `type`);
//! * pattern subscriptions (`Bus::subscribe_pattern`), which have no event type;
//! * replies, which the reply router reads, not a handler;
//! * an event declared with `channel` but neither `name` nor `namespace`: its name is its Rust
//!   type path, which two services sharing the channel need not have in common and which a
//!   module rename changes.

use crate::envelope::Metadata;
use crate::event::EventDescriptor;

/// Refuses a message whose CloudEvents `type` is not the name of the handler's event type; the
/// error is the reason the dispatcher dead-letters it with.
pub(crate) fn check(event: Option<&EventDescriptor>, meta: &Metadata) -> Result<(), String> {
    let Some(event) = event else {
        return Ok(());
    };
    if meta.event_type.is_empty() || meta.event_type == event.name || !has_stable_name(event) {
        return Ok(());
    }
    Err(format!(
        "CloudEvents type {:?} does not match the handler's event type {:?}",
        meta.event_type, event.name
    ))
}

/// False for an event whose name is its Rust type path although its channel was given apart
/// (`#[event(channel = "...")]` without `name`): the one case where the name is neither chosen
/// by the user nor the key that publisher and subscriber meet on.
fn has_stable_name(event: &EventDescriptor) -> bool {
    let is_type_path = event.name.split('.').eq(event.rust_type.split("::"));
    !is_type_path || event.name == event.channel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Durability;

    const ORDER: EventDescriptor = EventDescriptor {
        rust_type: "shop::orders::OrderCreated",
        name: "shop.orders.OrderCreated",
        channel: "shop.orders.OrderCreated",
        pattern: "shop.orders.OrderCreated",
        durability: Durability::Durable,
        version: 1,
        max_len: None,
        reply: None,
    };

    fn typed(event_type: &str) -> Metadata {
        Metadata::new("e-1", "", event_type)
    }

    #[test]
    fn the_event_types_own_name_is_accepted() {
        assert_eq!(
            check(Some(&ORDER), &typed("shop.orders.OrderCreated")),
            Ok(())
        );
    }

    #[test]
    fn another_type_is_refused_with_both_names() {
        assert_eq!(
            check(Some(&ORDER), &typed("x")),
            Err(
                "CloudEvents type \"x\" does not match the handler's event type \
                 \"shop.orders.OrderCreated\""
                    .to_owned()
            )
        );
    }

    #[test]
    fn bare_payloads_and_pattern_subscriptions_are_not_checked() {
        assert_eq!(check(Some(&ORDER), &Metadata::default()), Ok(()));
        assert_eq!(check(None, &typed("anything.At.All")), Ok(()));
    }

    #[test]
    fn a_type_path_name_is_checked_only_where_it_is_also_the_channel() {
        // `#[event]` without attributes: name and channel are the type path, the key both sides
        // meet on; a message of another type there is a mistake.
        let unnamed = EventDescriptor {
            rust_type: "shop::Tick",
            name: "shop.Tick",
            channel: "shop.Tick",
            pattern: "shop.Tick",
            ..ORDER
        };
        assert!(check(Some(&unnamed), &typed("other.Tick")).is_err());
        // `#[event(ephemeral, channel = "...")]`: the name is the type path, which a subscriber in
        // another crate or module does not share.
        let channel_only = EventDescriptor {
            channel: "tenant.{tenant}.presence",
            pattern: "tenant.*.presence",
            durability: Durability::Ephemeral,
            ..unnamed
        };
        assert_eq!(
            check(Some(&channel_only), &typed("svc.presence.Tick")),
            Ok(())
        );
        // An explicit name next to a channel is stable: checked.
        let named = EventDescriptor {
            name: "live.Presence",
            ..channel_only
        };
        assert!(check(Some(&named), &typed("svc.presence.Tick")).is_err());
        assert_eq!(check(Some(&named), &typed("live.Presence")), Ok(()));
    }
}
