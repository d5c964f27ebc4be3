use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "status.{state}")]
enum Status {
    Up { state: String },
    Down,
}

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "tick.{0}")]
struct Tick;

fn main() {}
