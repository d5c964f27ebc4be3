use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(name = shop.orders.OrderCreated, max_len = "1000", version = 0, reply = "Pong")]
struct OrderCreated;

#[derive(Event, Serialize, Deserialize)]
#[event(durable = true, max_len = 0, version = 4294967296)]
struct Ranges;

fn main() {}
