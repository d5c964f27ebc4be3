use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(durable)]
#[event(ephemeral)]
struct Both;

fn main() {}
