use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler(groups = "billing")]
async fn typo(_ev: OrderCreated) {}

#[handler(retries = 3, concurrency = 2, concurrency = 4)]
async fn unknown_and_duplicate(_ev: OrderCreated) {}

fn main() {}
