use eventbus_core::prelude::*;

// `max_len`, as `EventDescriptor::max_len` and `BusConfig::default_max_len`.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop.orders.OrderCreated", maxlen = 10_000)]
struct OrderCreated;

// `module`: the bus's `namespace` is a prefix of every key, another thing.
#[derive(Event, Serialize, Deserialize)]
#[event(namespace = "shop.payments")]
struct PaymentRequested;

fn main() {}
