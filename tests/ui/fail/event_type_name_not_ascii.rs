use eventbus_core::prelude::*;

// The type name becomes the last segment of the channel, which is ASCII only.
#[derive(Event, Serialize, Deserialize)]
struct Größe;

// With an explicit name the type name does not matter.
#[derive(Event, Serialize, Deserialize)]
#[event(name = "shop.Size")]
struct Maß;

fn main() {}
