use eventbus_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct NotAnEvent;

#[handler]
async fn on_string(_ev: String) {}

#[handler]
async fn on_plain(_ev: NotAnEvent, _ctx: Context) -> Result<(), HandlerError> {
    Ok(())
}

fn main() {}
