//! Request/reply on the in-memory bus: typed replies, handler errors, timeouts, no responders.
#![allow(missing_docs)] // test types

use std::time::Duration;

use eventbus_core::Error;
use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "test.users.FindUser", reply = UserFound)]
pub struct FindUser {
    pub id: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UserFound {
    pub id: u64,
    pub name: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.users.RenameUser", reply = bool)]
pub struct RenameUser {
    pub id: u64,
}

#[tokio::test]
async fn request_returns_the_typed_reply() {
    let bus = Bus::memory();
    bus.subscribe(|q: FindUser| async move {
        if q.id == 0 {
            return Err(HandlerError::permanent("no user 0"));
        }
        Ok(UserFound {
            id: q.id,
            name: format!("user-{}", q.id),
        })
    })
    .await
    .unwrap();
    let found = bus.request(&FindUser { id: 7 }).await.unwrap();
    assert_eq!(
        found,
        UserFound {
            id: 7,
            name: "user-7".into()
        }
    );

    let err = bus.request(&FindUser { id: 0 }).await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "no user 0"),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_requests_get_their_own_replies() {
    let bus = Bus::memory();
    bus.subscribe_with(
        |q: FindUser| async move {
            Ok::<_, HandlerError>(UserFound {
                id: q.id,
                name: String::new(),
            })
        },
        HandlerOptions::new().concurrency(8),
    )
    .await
    .unwrap();
    let replies = futures::future::join_all((1..=20).map(|id| {
        let bus = bus.clone();
        async move { bus.request(&FindUser { id }).await.unwrap().id }
    }))
    .await;
    assert_eq!(replies, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_request_nobody_listens_to_fails_at_once() {
    let bus = Bus::memory();
    let err = bus.request(&FindUser { id: 1 }).await.unwrap_err();
    assert!(
        matches!(&err, Error::NoResponders { channel, .. } if channel == "test.users.FindUser"),
        "{err}"
    );
}

#[tokio::test]
async fn a_request_without_reply_times_out() {
    let bus = Bus::memory();
    bus.subscribe(|_q: FindUser| async move {
        std::future::pending::<()>().await;
        Ok::<_, HandlerError>(UserFound {
            id: 0,
            name: String::new(),
        })
    })
    .await
    .unwrap();
    let err = bus
        .request_with_timeout(&FindUser { id: 1 }, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(50)),
        "{err}"
    );
}

#[tokio::test]
async fn durable_requests_are_answered_by_a_consumer_group() {
    let bus = Bus::memory();
    bus.subscribe(|q: RenameUser| async move { Ok::<_, HandlerError>(q.id.is_multiple_of(2)) })
        .await
        .unwrap();
    assert!(bus.request(&RenameUser { id: 4 }).await.unwrap());
    assert!(!bus.request(&RenameUser { id: 5 }).await.unwrap());
}
