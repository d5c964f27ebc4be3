use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler(dedup_ttl_secs = 3600)]
async fn ttl_without_dedup(_ev: OrderCreated) {}

#[handler(broadcast, dedup)]
async fn broadcast_with_dedup(_ev: OrderCreated) {}

#[handler(dedup = true, dedup_ttl_secs = 0)]
async fn values(_ev: OrderCreated) {}

fn main() {}
