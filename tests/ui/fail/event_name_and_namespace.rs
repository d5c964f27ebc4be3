use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop.orders.OrderCreated", namespace = "shop.orders")]
struct OrderCreated;

fn main() {}
