use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler]
async fn nothing() {}

#[handler]
async fn three(_ev: OrderCreated, _ctx: Context, _db: String) {}

fn main() {}
