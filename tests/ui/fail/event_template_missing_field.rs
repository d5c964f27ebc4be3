use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "tenant.{tenent}.presence")]
struct UserOnline {
    tenant: String,
    user_id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "room.{1}")]
struct Message(String);

fn main() {}
