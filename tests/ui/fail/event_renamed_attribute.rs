use eventbus_core::prelude::*;

// `maxlen` was the name before it matched `EventDescriptor::max_len` and
// `BusConfig::default_max_len`.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop.orders.OrderCreated", maxlen = 10_000)]
struct OrderCreated;

fn main() {}
