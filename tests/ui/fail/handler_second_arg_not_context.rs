use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler]
async fn charge(_ev: OrderCreated, _db: String) {}

fn main() {}
