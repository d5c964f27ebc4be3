// An event with attribute errors still gets a stand-in `impl Event`: code using it as an event
// reports nothing more, only the two mistakes in the attribute.
use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "orders.{region}", max_len = 5)]
struct OrderCreated {
    id: u64,
}

#[handler]
async fn on_order(_ev: OrderCreated) {}

async fn publish(bus: &Bus) -> eventbus_core::Result<()> {
    bus.publish(&OrderCreated { id: 1 }).await?;
    Ok(())
}

fn main() {
    let _ = publish;
}
