use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "tenant.{tenant.presence")]
struct Unclosed {
    tenant: String,
}

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "tenant.tenant}.presence")]
struct Unopened {
    tenant: String,
}

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "tenant.{}.presence")]
struct Empty {
    tenant: String,
}

fn main() {}
