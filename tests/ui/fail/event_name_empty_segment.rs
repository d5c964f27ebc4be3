use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop..OrderCreated")]
struct TwoDots;

#[derive(Event, Serialize, Deserialize)]
#[event(module = "shop.orders.")]
struct TrailingDot;

#[derive(Event, Serialize, Deserialize)]
#[event(name = "")]
struct Empty;

fn main() {}
