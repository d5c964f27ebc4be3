use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler]
async fn reference(_ev: OrderCreated) -> &'static str {
    ""
}

#[handler]
async fn tuple(_ev: OrderCreated) -> (u8, u8) {
    (1, 2)
}

#[handler]
async fn opaque(_ev: OrderCreated) -> impl Sized {}

fn main() {}
