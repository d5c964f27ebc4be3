use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop.order created")]
struct OrderCreated;

fn main() {}
