use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(reply = Pong)]
struct Ping;

#[derive(Serialize, Deserialize)]
struct Pong;

#[handler]
async fn answer(_ping: Ping) -> Result<(), HandlerError> {
    Ok(())
}

#[handler]
async fn forgets_reply(_ping: Ping) {}

#[derive(Event, Serialize, Deserialize)]
struct NotARequest;

#[handler]
async fn replies_anyway(_ev: NotARequest) -> Result<Pong, HandlerError> {
    Ok(Pong)
}

fn main() {}
