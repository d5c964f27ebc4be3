use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

struct Service;

impl Service {
    #[handler]
    async fn charge(&self, _ev: OrderCreated) {}
}

#[handler]
async fn generic<E: Event>(_ev: E) {}

#[handler]
async fn borrowed(_ev: &OrderCreated) {}

fn main() {}
