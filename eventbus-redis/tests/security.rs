//! Redis ACL users without permission on a key, a channel or a command: publishing, subscribing
//! and starting a consumer fail at once with `Error::PermissionDenied`, which names the user, the
//! command, the key or channel and the server's reason, and never the password.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, namespace, wait_until};
use eventbus_core::prelude::*;
use eventbus_core::{Error, PatternMessage};
use eventbus_redis::RedisTransport;

const PASSWORD: &str = "open-sesame-5f3a";

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "orders.x")]
struct OrderPlaced {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "chat.x")]
struct ChatLine {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, channel = "tenant.{tenant}.presence")]
struct Presence {
    tenant: String,
}

/// A server with two ACL users: `limited` may only touch keys and channels under `allowed:`,
/// `noreader` may touch every key but not run `XREADGROUP`.
fn server() -> RedisServer {
    let limited = format!(">{PASSWORD}");
    RedisServer::start_with(&[
        "--user",
        "limited",
        "on",
        &limited,
        "~allowed:*",
        "&allowed:*",
        "+@all",
        "--user",
        "noreader",
        "on",
        &limited,
        "~*",
        "&*",
        "+@all",
        "-xreadgroup",
    ])
}

async fn bus_as(server: &RedisServer, user: &str, namespace: &str) -> Bus {
    let url = format!("redis://{user}:{PASSWORD}@127.0.0.1:{}", server.port());
    let transport = RedisTransport::connect(&url)
        .await
        .expect("the user may log in");
    Bus::builder()
        .transport(transport)
        .namespace(namespace)
        .configure(|c| c.claim_idle = Duration::from_millis(500))
        .build()
        .expect("valid bus")
}

/// Runs `f` with a deadline: a refused command must fail, not hang.
async fn promptly<T>(what: &str, f: impl Future<Output = eventbus_core::Result<T>>) -> Error {
    match tokio::time::timeout(Duration::from_secs(5), f).await {
        Ok(Ok(_)) => panic!("{what} succeeded without permission"),
        Ok(Err(e)) => e,
        Err(_) => panic!("{what} hung instead of failing"),
    }
}

/// Checks the error is a permission error naming `command` on `kind` `target`, and that neither
/// its text nor its debug output shows the password.
fn assert_denied(e: &Error, command: &str, kind: &str, target: &str) {
    let text = format!("{e}");
    let debug = format!("{e:?}");
    println!("{text}");
    assert!(
        !text.contains(PASSWORD) && !debug.contains(PASSWORD),
        "{text} {debug}"
    );
    match e {
        Error::PermissionDenied(denied) => {
            assert_eq!(
                (
                    denied.user.as_str(),
                    denied.command.as_str(),
                    denied.target_kind,
                    denied.target.as_str()
                ),
                ("limited", command, kind, target),
                "{text}"
            );
            assert!(denied.reason.starts_with("NOPERM "), "{text}");
            assert_eq!(denied.transport, "redis");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    let expected = format!(
        "permission denied: user 'limited' may not run {command} on {kind} '{target}' (NOPERM "
    );
    assert!(text.starts_with(&expected), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_permission_names_user_command_and_key() {
    let server = server();
    let ns = namespace("acl-pub");
    let b = bus_as(&server, "limited", &ns).await;

    let e = promptly("XADD", b.publish(&OrderPlaced { n: 1 })).await;
    assert_denied(&e, "XADD", "key", &format!("{ns}.orders.x"));
    assert!(e.to_string().contains("keys used as arguments"), "{e}");

    let e = promptly("PUBLISH", b.publish(&ChatLine { n: 1 })).await;
    assert_denied(&e, "PUBLISH", "channel", &format!("{ns}.chat.x"));
    assert!(e.to_string().contains("channels used as arguments"), "{e}");

    // A pipelined batch names the key too.
    let batch = [1, 2, 3].map(|n| OrderPlaced { n });
    let e = promptly("pipelined XADD", b.publish_all(&batch)).await;
    assert_denied(&e, "XADD", "key", &format!("{ns}.orders.x"));
    assert_eq!(b.stats().published, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_without_permission_names_user_command_and_channel() {
    let server = server();
    let ns = namespace("acl-sub");
    let b = bus_as(&server, "limited", &ns).await;

    let e = promptly("SUBSCRIBE", b.subscribe(|_e: ChatLine| async {})).await;
    assert_denied(&e, "SUBSCRIBE", "channel", &format!("{ns}.chat.x"));

    let e = promptly("PSUBSCRIBE", b.subscribe(|_e: Presence| async {})).await;
    assert_denied(
        &e,
        "PSUBSCRIBE",
        "pattern",
        &format!("{ns}.tenant.*.presence"),
    );

    let e = promptly(
        "PSUBSCRIBE",
        b.subscribe_pattern("secret.*", |_m: PatternMessage| async {
            Ok::<_, HandlerError>(())
        }),
    )
    .await;
    assert_denied(&e, "PSUBSCRIBE", "pattern", &format!("{ns}.secret.*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_a_consumer_without_permission_fails_at_once() {
    let server = server();
    let ns = namespace("acl-consume");

    // No permission on the stream key: XGROUP CREATE is refused.
    let b = bus_as(&server, "limited", &ns).await;
    let e = promptly(
        "XGROUP CREATE",
        b.subscribe_with(
            |_e: OrderPlaced| async {},
            HandlerOptions::new().group("billing"),
        ),
    )
    .await;
    assert_denied(&e, "XGROUP CREATE", "key", &format!("{ns}.orders.x"));

    // Permission on the key but not on XREADGROUP: refused when the consumer starts, not at
    // every read of a consumer that looks alive.
    let b = bus_as(&server, "noreader", &ns).await;
    let e = promptly(
        "XREADGROUP",
        b.subscribe_with(
            |_e: OrderPlaced| async {},
            HandlerOptions::new().group("billing"),
        ),
    )
    .await;
    let text = e.to_string();
    println!("{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        text.starts_with(&format!(
            "permission denied: user 'noreader' may not run XREADGROUP on key '{ns}.orders.x' \
             (NOPERM this user has no permissions to run the 'xreadgroup' command)"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_acl_allows_works_for_the_same_user() {
    // The same user in a namespace under `allowed:`: the setup is right, only the keys differ.
    let server = server();
    let ns = format!("allowed:{}", namespace("acl-ok"));
    let b = bus_as(&server, "limited", &ns).await;
    // Published before the group exists: the permission check at the consumer's start must not
    // take it (it is delivered once, by the first fetch).
    b.publish(&OrderPlaced { n: 6 }).await.unwrap();
    let durable = Recorder::default();
    let live = Recorder::default();
    let (d, l) = (durable.clone(), live.clone());
    b.subscribe_with(
        move |e: OrderPlaced, ctx: Context| {
            let d = d.clone();
            async move { d.push((e.n, ctx.attempt())) }
        },
        HandlerOptions::new().group("billing"),
    )
    .await
    .unwrap();
    b.subscribe(move |e: ChatLine| {
        let l = l.clone();
        async move { l.push(e.n) }
    })
    .await
    .unwrap();
    b.publish(&OrderPlaced { n: 7 }).await.unwrap();
    b.publish(&ChatLine { n: 8 }).await.unwrap();
    assert!(wait_until(PATIENCE, || durable.len() == 2 && live.len() == 1).await);
    assert_eq!(
        (durable.items(), live.items()),
        (vec![(6, 1), (7, 1)], vec![8])
    );
    b.shutdown().await;
}
