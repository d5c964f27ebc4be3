//! The idempotency guard of `dedup` handlers on Redis, beyond the rules of the conformance suite
//! (skips, failed calls, replays): the marks are string keys with an expiry, none is set for a
//! failed call, an entry without an event id is marked by its stream entry id, and an ACL user
//! that may not read the marks fails at subscribe.

mod common;

use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, bus, namespace, plain, wait_until};
use eventbus_core::prelude::*;
use eventbus_core::{Error, StatsSnapshot};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

const HOUR: Duration = Duration::from_secs(3600);

fn options() -> HandlerOptions {
    HandlerOptions::new()
        .group("billing")
        .backoff(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(20))
        .dedup(HOUR)
}

async fn recorded(b: &Bus, options: HandlerOptions) -> Recorder<u32> {
    let rec = Recorder::default();
    let r = rec.clone();
    b.subscribe_with(
        move |o: OrderCreated| {
            let r = r.clone();
            async move { r.push(o.order_id) }
        },
        options,
    )
    .await
    .unwrap();
    rec
}

/// `PTTL key` in milliseconds (-2: no such key).
async fn pttl(url: &str, key: &str) -> i64 {
    let mut raw = plain(url).await;
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut raw)
        .await
        .unwrap()
}

async fn settled(b: &Bus, done: impl Fn(&StatsSnapshot) -> bool) {
    let ok = wait_until(PATIENCE, || done(&b.stats())).await;
    assert!(ok, "{:?}", b.stats());
}

/// The mark of a handled event is a string key that expires after the handler's ttl. (That
/// the group then skips the event is a rule of the conformance suite.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_is_a_key_that_expires_after_the_handlers_ttl() {
    let server = RedisServer::start();
    let ns = namespace("dedup");
    let b = bus(&server.url(), &ns).await;
    let handled = recorded(&b, options()).await;
    let receipt = b.publish(&OrderCreated { order_id: 1 }).await.unwrap();
    settled(&b, |s| s.handled == 1).await;
    assert_eq!(handled.items(), vec![1]);
    let key = format!(
        "{ns}.eventbus.dedup:shop.OrderCreated:billing:{}",
        receipt.event_id
    );
    let ttl = pttl(&server.url(), &key).await;
    assert!(ttl > 0 && ttl <= 3_600_000, "PTTL {key} = {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_sets_no_mark() {
    let server = RedisServer::start();
    let ns = namespace("dedup-failed");
    let b = bus(&server.url(), &ns).await;
    b.subscribe_with(
        |_: OrderCreated| async { Err::<(), _>(HandlerError::permanent("declined")) },
        options(),
    )
    .await
    .unwrap();
    let receipt = b.publish(&OrderCreated { order_id: 1 }).await.unwrap();
    settled(&b, |s| s.dead_lettered == 1).await;
    let key = format!(
        "{ns}.eventbus.dedup:shop.OrderCreated:billing:{}",
        receipt.event_id
    );
    assert_eq!(pttl(&server.url(), &key).await, -2, "{key} exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_an_event_id_is_marked_by_its_entry_id() {
    let server = RedisServer::start();
    let ns = namespace("dedup-bare");
    let b = bus(&server.url(), &ns).await;
    let handled = recorded(&b, options()).await;
    let stream = b.channel_of::<OrderCreated>();
    let mut raw = plain(&server.url()).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        // What `redis-cli XADD <stream> '*' data '{"order_id":7}'` sends: no id at all.
        let id: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("data")
            .arg(r#"{"order_id":7}"#)
            .query_async(&mut raw)
            .await
            .unwrap();
        ids.push(id);
    }
    settled(&b, |s| s.handled == 2).await;
    // Two entries: the same payload added twice is not recognised as a duplicate.
    assert_eq!(handled.items(), vec![7, 7]);
    for id in ids {
        let key = format!("{ns}.eventbus.dedup:shop.OrderCreated:billing:{id}");
        assert!(pttl(&server.url(), &key).await > 0, "{key} is missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_may_not_read_the_marks_fails_at_subscribe() {
    let server = RedisServer::start_with(&[
        "--user", "nodedup", "on", ">pw-7c1e", "~*", "&*", "+@all", "-exists",
    ]);
    let ns = namespace("dedup-acl");
    let url = format!("redis://nodedup:pw-7c1e@127.0.0.1:{}", server.port());
    let b = bus(&url, &ns).await;
    let err = b
        .subscribe_with(|_: OrderCreated| async {}, options())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("user 'nodedup' may not run EXISTS"), "{text}");
    assert!(!err.to_string().contains("pw-7c1e"), "{err}");
    // Without dedup the same user consumes.
    let without = HandlerOptions {
        dedup: None,
        ..options()
    };
    b.subscribe_with(|_: OrderCreated| async {}, without)
        .await
        .unwrap();
}
