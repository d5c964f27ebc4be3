use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct OrderCreated;

#[handler]
async fn charge(_ev: OrderCreated) -> String {
    String::new()
}

#[handler]
async fn bad_error(_ev: OrderCreated) -> Result<(), u32> {
    Ok(())
}

fn main() {}
