use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

struct Db;

#[handler]
async fn nothing() {}

#[handler]
async fn borrowed_state(_ev: OrderCreated, _ctx: Context, _db: &State<Db>) {}

fn main() {}
