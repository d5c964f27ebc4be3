use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

struct Db;

// After the event come `Context` and `State<T>`, nothing else.
#[handler]
async fn charge(_ev: OrderCreated, _db: String) {}

// The state itself instead of `State<Db>`.
#[handler]
async fn charge_with_db(_ev: OrderCreated, _ctx: Context, _db: Db) {}

fn main() {}
