use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler(group = "billing team", concurrency = 0, max_deliveries = "5")]
async fn values(_ev: OrderCreated) {}

#[handler(backoff_ms = 500, backoff_max_ms = 100, broadcast = true)]
async fn backoff(_ev: OrderCreated) {}

#[handler(broadcast, group = "audit")]
async fn broadcast_with_group(_ev: OrderCreated) {}

fn main() {}
