use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, name = "live.Tick")]
struct Tick;

// Pub/sub already delivers every ephemeral event to every live subscriber.
#[handler(broadcast, concurrency = 4)]
async fn on_tick(_ev: Tick) {}

fn main() {}
