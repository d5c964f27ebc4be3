//! Every `#[event(...)]` override, alone and split over several attributes.
use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop.orders.OrderCreated")]
struct Named;

#[derive(Event, Serialize, Deserialize)]
#[event(module = "shop.billing")]
struct PaymentRequested {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize)]
#[event(channel = "legacy:orders-v2")]
struct OnLegacyChannel;

#[derive(Event, Serialize, Deserialize)]
#[event(durable, max_len = 10_000, version = 3)]
struct Bounded;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral)]
#[event(name = "cache.Invalidated", channel = "cache.invalidate")]
struct Invalidated {
    key: String,
}

fn main() {
    let d = Named::DESCRIPTOR;
    assert_eq!(d.name, "shop.orders.OrderCreated");
    assert_eq!(d.channel, "shop.orders.OrderCreated");
    assert_eq!(d.pattern, "shop.orders.OrderCreated");

    let d = PaymentRequested::DESCRIPTOR;
    assert_eq!(d.name, "shop.billing.PaymentRequested");
    assert_eq!(d.channel, "shop.billing.PaymentRequested");
    assert!(d.rust_type.ends_with("::PaymentRequested"));

    let d = OnLegacyChannel::DESCRIPTOR;
    assert_eq!(d.name, format!("{}.OnLegacyChannel", module_path!()));
    assert_eq!(d.channel, "legacy:orders-v2");
    assert_eq!(d.pattern, "legacy:orders-v2");

    let d = Bounded::DESCRIPTOR;
    assert_eq!(d.durability, Durability::Durable);
    assert_eq!(d.max_len, Some(10_000));
    assert_eq!(d.version, 3);

    let d = Invalidated::DESCRIPTOR;
    assert_eq!(d.durability, Durability::Ephemeral);
    assert_eq!(d.name, "cache.Invalidated");
    assert_eq!(d.channel, "cache.invalidate");
    assert_eq!(d.max_len, None);
    let ev = Invalidated { key: "k".into() };
    assert_eq!(ev.channel(), "cache.invalidate");

    let _ = PaymentRequested {
        order_id: String::new(),
    }
    .order_id;
    let _ = ev.key;
}

// The descriptor is a constant: it can be checked at compile time.
const _: () = assert!(Bounded::DESCRIPTOR.version == 3);
const _: () = assert!(matches!(
    Invalidated::DESCRIPTOR.durability,
    Durability::Ephemeral
));
