use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(max_length = 1000)]
struct Typo;

#[derive(Event, Serialize, Deserialize)]
#[event(stream, partition::key = "id")]
struct Unknown;

fn main() {}
