use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, maxlen = 1000)]
struct Presence;

fn main() {}
