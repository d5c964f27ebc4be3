use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, name = "live.Tick")]
struct Tick;

#[handler(group = "live", dedup)]
async fn on_tick(_ev: Tick) {}

fn main() {}
