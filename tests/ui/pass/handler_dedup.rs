//! `dedup` on a durable event registers with the default or the given ttl.
use std::time::Duration;

use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: String,
}

#[handler(group = "billing", dedup)]
async fn charge(_ev: OrderCreated) {}

#[handler(group = "audit", dedup, dedup_ttl_secs = 3600, concurrency = 4)]
async fn audit(_ev: OrderCreated) {}

fn main() {
    let dedup = |group: &str| {
        eventbus_core::handler::registered_handlers()
            .into_iter()
            .find(|h| h.options.group == Some(group))
            .and_then(|h| h.options.dedup)
    };
    assert_eq!(dedup("billing"), Some(HandlerOptions::DEFAULT_DEDUP_TTL));
    assert_eq!(dedup("audit"), Some(Duration::from_secs(3600)));
}
