//! Request/reply: a request gets its handler's typed reply, or the handler's error, or
//! `NoResponders` when nobody subscribes, or `Timeout`.

use std::time::Duration;

use super::Backend;
use super::events::{FindUser, RenameUser, UserFound};
use super::support::{FAST, Setup};
use crate::error::Error;
use crate::{Bus, HandlerError};

/// Subscribes a handler of [`FindUser`] that answers `user-<id>`, and fails for id 0.
async fn serve_users(bus: &Bus) {
    bus.subscribe_with(
        |q: FindUser| async move {
            if q.id == 0 {
                return Err(HandlerError::permanent("no user 0"));
            }
            Ok(UserFound {
                id: q.id,
                name: format!("user-{}", q.id),
            })
        },
        FAST.concurrency(8),
    )
    .await
    .expect("subscribe");
}

/// `bus.request` returns the reply of the handler on another instance, typed.
pub async fn a_request_gets_the_typed_reply_of_its_handler(backend: &dyn Backend) {
    let setup = Setup::new(backend, "request");
    let (server, client) = (setup.bus().await, setup.bus().await);
    serve_users(&server).await;
    let found = client.request(&FindUser { id: 7 }).await.expect("request");
    assert_eq!(
        found,
        UserFound {
            id: 7,
            name: "user-7".into()
        }
    );
}

/// Requests in flight at once each get their own reply.
pub async fn concurrent_requests_get_their_own_replies(backend: &dyn Backend) {
    let setup = Setup::new(backend, "concurrent_requests");
    let (server, client) = (setup.bus().await, setup.bus().await);
    serve_users(&server).await;
    let replies = futures::future::join_all((1..=20).map(|id| {
        let client = client.clone();
        async move { client.request(&FindUser { id }).await.expect("request").id }
    }))
    .await;
    assert_eq!(replies, (1..=20).collect::<Vec<_>>());
}

/// The error of a request's handler comes back as [`Error::Remote`] with its message.
pub async fn a_failing_request_handler_answers_with_its_error(backend: &dyn Backend) {
    let setup = Setup::new(backend, "request_error");
    let (server, client) = (setup.bus().await, setup.bus().await);
    serve_users(&server).await;
    match client.request(&FindUser { id: 0 }).await {
        Err(Error::Remote { message, .. }) => assert_eq!(message, "no user 0"),
        other => panic!("expected the handler's error, got {other:?}"),
    }
}

/// A request on a channel nobody subscribes to fails at once with [`Error::NoResponders`].
pub async fn a_request_nobody_subscribes_to_fails_with_no_responders(backend: &dyn Backend) {
    let setup = Setup::new(backend, "no_responders");
    let client = setup.bus().await;
    match client.request(&FindUser { id: 1 }).await {
        Err(Error::NoResponders { channel, .. }) => {
            assert_eq!(channel, client.channel_of::<FindUser>())
        }
        other => panic!("expected NoResponders, got {other:?}"),
    }
}

/// A request whose handler never answers fails with [`Error::Timeout`] after the timeout.
pub async fn a_request_without_a_reply_in_time_times_out(backend: &dyn Backend) {
    let setup = Setup::new(backend, "request_timeout");
    let (server, client) = (setup.bus().await, setup.bus().await);
    server
        .subscribe(|_: FindUser| async move {
            std::future::pending::<()>().await;
            Ok::<_, HandlerError>(UserFound {
                id: 0,
                name: String::new(),
            })
        })
        .await
        .expect("subscribe");
    let timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    match client
        .request_with_timeout(&FindUser { id: 1 }, timeout)
        .await
    {
        Err(Error::Timeout { timeout: t, .. }) => assert_eq!(t, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A durable request is answered by one member of its handler's consumer group.
pub async fn a_durable_request_is_answered_by_a_consumer_group(backend: &dyn Backend) {
    let setup = Setup::new(backend, "durable_request");
    let (server, client) = (setup.bus().await, setup.bus().await);
    server
        .subscribe_with(
            |q: RenameUser| async move { Ok::<_, HandlerError>(q.id.is_multiple_of(2)) },
            FAST.group("users"),
        )
        .await
        .expect("subscribe");
    assert!(
        client
            .request(&RenameUser { id: 4 })
            .await
            .expect("request")
    );
    assert!(
        !client
            .request(&RenameUser { id: 5 })
            .await
            .expect("request")
    );
}
