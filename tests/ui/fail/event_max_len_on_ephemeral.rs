use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, max_len = 1000)]
struct Presence;

fn main() {}
