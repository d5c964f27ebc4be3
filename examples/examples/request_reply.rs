//! Request/reply: a typed request, its handler's typed reply, errors and timeouts.
//!
//! ```text
//! cargo run -p eventbus-examples --example request_reply
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p eventbus-examples --example request_reply
//! ```
//!
//! `FindUser` declares its reply type; the compiler checks that its handler returns a
//! `Result<UserFound, _>` and that `bus.request(&FindUser { .. })` yields a `UserFound`.

use std::time::Duration;

use eventbus::prelude::*;

/// Looks a user up by id.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(ephemeral, name = "users.FindUser", reply = UserFound)]
struct FindUser {
    id: u64,
}

/// The reply to [`FindUser`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserFound {
    id: u64,
    name: String,
}

#[handler(concurrency = 16)]
async fn find_user(q: FindUser) -> Result<UserFound, HandlerError> {
    match q.id {
        0 => Err(HandlerError::permanent("user ids start at 1")),
        id => Ok(UserFound {
            id,
            name: format!("user-{id}"),
        }),
    }
}

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let bus = eventbus::builder_from_env()
        .await?
        .namespace("example-request-reply")
        .build()?;
    bus.start_registered_handlers().await?;

    let found = bus.request(&FindUser { id: 7 }).await?;
    println!("FindUser {{ id: 7 }} -> {found:?}");

    match bus.request(&FindUser { id: 0 }).await {
        Err(eventbus::Error::Remote { message, .. }) => {
            println!("FindUser {{ id: 0 }} -> handler error: {message}")
        }
        other => println!("FindUser {{ id: 0 }} -> unexpected {other:?}"),
    }

    let lookups = futures_like_join(&bus, [1, 2, 3]).await?;
    println!("three concurrent lookups -> {lookups:?}");

    bus.shutdown().await;

    // Nobody listens on this bus: the request fails at once instead of waiting for the timeout.
    let lonely = eventbus::builder_from_env()
        .await?
        .namespace("example-request-reply-empty")
        .build()?;
    match lonely
        .request_with_timeout(&FindUser { id: 1 }, Duration::from_millis(500))
        .await
    {
        Err(e) => println!("with no handler running -> {e}"),
        Ok(v) => println!("with no handler running -> unexpected {v:?}"),
    }
    lonely.shutdown().await;
    Ok(())
}

async fn futures_like_join(bus: &Bus, ids: [u64; 3]) -> eventbus::Result<Vec<String>> {
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.request(&FindUser { id }).await })
        })
        .collect();
    let mut names = Vec::new();
    for task in tasks {
        let found = task
            .await
            .map_err(|e| eventbus::Error::Config(e.to_string()))??;
        names.push(found.name);
    }
    Ok(names)
}
