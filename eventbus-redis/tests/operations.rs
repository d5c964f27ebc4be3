//! Operating the Redis transport: introspection, credentials in the URL, passwords never shown.
//! (Request/reply is a rule of the conformance suite, `conformance.rs`.)

mod common;

use std::sync::Arc;

use common::{PATIENCE, Recorder, RedisServer, namespace, wait_until, wait_until_async};
use eventbus_core::PatternMessage;
use eventbus_core::prelude::*;
use eventbus_redis::{GroupInfo, RedisTransport};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "chat.Message")]
struct ChatMessage {
    text: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_reports_what_the_bus_did() {
    let server = RedisServer::start();
    let ns = namespace("introspect");
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let b = Bus::builder()
        .transport(transport.clone())
        .namespace(&ns)
        .instance("worker-1")
        .build()
        .unwrap();

    // Pub/sub: two handlers of one channel share one subscription; one pattern.
    b.subscribe(|_m: ChatMessage| async {}).await.unwrap();
    b.subscribe(|_m: ChatMessage| async {}).await.unwrap();
    let pattern_sub = b
        .subscribe_pattern("tenant.*", |_m: PatternMessage| async {
            Ok::<_, HandlerError>(())
        })
        .await
        .unwrap();
    let chat = b.channel_of::<ChatMessage>();
    assert_eq!(
        transport.channels(&format!("{ns}.*")).await.unwrap(),
        vec![chat.clone()]
    );
    assert_eq!(
        transport
            .subscriber_counts(&[&chat, "nobody.listens"])
            .await
            .unwrap(),
        vec![(chat.clone(), 1), ("nobody.listens".to_owned(), 0)]
    );
    assert_eq!(transport.pattern_count().await.unwrap(), 1);
    pattern_sub.unsubscribe().await;
    assert!(
        wait_until_async(PATIENCE, async || transport.pattern_count().await.unwrap()
            == 0)
        .await,
        "PUNSUBSCRIBE was not sent when the last pattern subscriber left"
    );

    // Streams: one group, one member, a handler holding one entry.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Recorder::default();
    let (g, s) = (gate.clone(), started.clone());
    b.subscribe_with(
        move |o: OrderCreated| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                s.push(o.order_id);
                let _permit = g.acquire().await;
            }
        },
        HandlerOptions::new().group("billing"),
    )
    .await
    .unwrap();
    let stream = b.channel_of::<OrderCreated>();
    let receipts = b
        .publish_all(&[1, 2, 3].map(|order_id| OrderCreated { order_id }))
        .await
        .unwrap();
    assert!(wait_until(PATIENCE, || started.len() == 1).await);

    assert_eq!(transport.stream_len(&stream).await.unwrap(), 3);
    assert_eq!(
        transport.pending_count(&stream, "billing").await.unwrap(),
        1
    );
    assert_eq!(
        transport.groups(&stream).await.unwrap(),
        vec![GroupInfo {
            name: "billing".into(),
            consumers: 1,
            pending: 1,
            last_delivered_id: receipts[0].stream_id.clone().unwrap(),
            lag: Some(2),
        }]
    );
    let consumers = transport.consumers(&stream, "billing").await.unwrap();
    assert_eq!(consumers.len(), 1);
    assert_eq!(
        (consumers[0].name.as_str(), consumers[0].pending),
        ("worker-1", 1)
    );

    gate.add_permits(3);
    assert!(
        wait_until_async(PATIENCE, async || {
            started.len() == 3 && transport.pending_count(&stream, "billing").await.unwrap() == 0
        })
        .await
    );
    let groups = transport.groups(&stream).await.unwrap();
    assert_eq!(groups[0].lag, Some(0));
    assert_eq!(
        groups[0].last_delivered_id,
        receipts[2].stream_id.clone().unwrap()
    );

    // Keys that do not exist.
    assert_eq!(transport.stream_len("no.such.stream").await.unwrap(), 0);
    assert!(transport.groups("no.such.stream").await.unwrap().is_empty());
    assert!(
        transport
            .consumers("no.such.stream", "g")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_shows() {
    let e = RedisTransport::connect("redis://alice:hunter2@127.0.0.1:1/0")
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("alice:***@127.0.0.1:1"), "{text}");

    let server = RedisServer::start();
    let t = RedisTransport::connect(&format!(
        "redis://default:hunter2@127.0.0.1:{}/3",
        server.port()
    ))
    .await;
    // The test server has no password: AUTH fails, and the error does not print it either.
    let text = match t {
        Ok(t) => format!("{t:?} {}", t.server()),
        Err(e) => format!("{e} {e:?}"),
    };
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_database_in_the_url_are_used() {
    let server = RedisServer::start_with(&[
        "--requirepass",
        "s3cret",
        "--user",
        "alice",
        "on",
        ">wonderland",
        "~*",
        "&*",
        "+@all",
    ]);
    let port = server.port();
    for url in [
        format!("redis://:s3cret@127.0.0.1:{port}/3"),
        format!("redis://alice:wonderland@127.0.0.1:{port}/3"),
    ] {
        let transport = RedisTransport::connect(&url).await.unwrap();
        let shown = format!("{transport:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("wonderland"),
            "{shown}"
        );
        let ns = namespace("auth");
        let b = Bus::builder()
            .transport(transport.clone())
            .namespace(&ns)
            .build()
            .unwrap();
        // Pub/sub (its own connection) and streams both authenticate.
        let rec = Recorder::default();
        let r = rec.clone();
        b.subscribe(move |m: ChatMessage| {
            let r = r.clone();
            async move { r.push(m.text) }
        })
        .await
        .unwrap();
        b.publish(&ChatMessage { text: "hi".into() }).await.unwrap();
        b.publish(&OrderCreated { order_id: 1 }).await.unwrap();
        assert!(wait_until(PATIENCE, || rec.len() == 1).await);
        // The stream went to database 3.
        let mut db3 = common::plain(&url).await;
        let len: u64 = redis::cmd("XLEN")
            .arg(b.channel_of::<OrderCreated>())
            .query_async(&mut db3)
            .await
            .unwrap();
        assert_eq!(len, 1);
        let mut db0 = common::plain(&format!("redis://:s3cret@127.0.0.1:{port}/0")).await;
        let len: u64 = redis::cmd("XLEN")
            .arg(b.channel_of::<OrderCreated>())
            .query_async(&mut db0)
            .await
            .unwrap();
        assert_eq!(len, 0);
    }

    let e = RedisTransport::connect(&format!("redis://alice:wrong-password@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains("wrong-password"), "{text}");
    assert!(text.contains("alice:***@"), "{text}");
}
