use eventbus_core::prelude::*;
use std::rc::Rc;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

async fn audit() {}

// Handlers run on a multi-threaded runtime: their future must be `Send`.
#[handler]
async fn keeps_rc(_ev: OrderCreated) {
    let count = Rc::new(1);
    audit().await;
    drop(count);
}

fn main() {}
