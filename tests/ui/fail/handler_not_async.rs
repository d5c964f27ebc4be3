use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler]
fn charge(_ev: OrderCreated) {}

fn main() {}
