use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "orders.*")]
struct AnyOrder;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "orders.{id}")]
struct PlaceholderInName {
    id: u64,
}

fn main() {}
