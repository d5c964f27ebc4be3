use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop.orders.OrderCreated", version = 2)]
#[event(name = "shop.orders.OrderPlaced", ephemeral, ephemeral)]
struct OrderCreated;

fn main() {}
