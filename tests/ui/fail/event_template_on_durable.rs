use eventbus_core::prelude::*;

// Durable is the default: one stream per type, so no channel per value.
#[derive(Event, Serialize, Deserialize)]
#[event(channel = "orders.{region}.created")]
struct OrderCreated {
    region: String,
}

fn main() {}
