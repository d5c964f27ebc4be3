use eventbus_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct Tenant {
    id: String,
}

// The template formats its fields with `Display`: the error points at the field.
#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "tenant.{tenant}.presence")]
struct UserOnline {
    tenant: Tenant,
}

fn main() {}
