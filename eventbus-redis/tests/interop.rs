//! Services not written in Rust: what a plain Redis client sends reaches typed handlers, and what
//! eventbus sends is plain CloudEvents JSON. And the same handler code behaves the same on the
//! in-memory bus and on Redis.

mod common;

use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, bus, eventually, namespace, plain, wait_until};
use eventbus_core::prelude::*;
use eventbus_core::testing::dead_letters;
use futures::StreamExt;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "chat.Message")]
struct ChatMessage {
    text: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
    amount_cents: i64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.PaymentRequested")]
struct PaymentRequested {
    order_id: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_json_from_a_plain_client_reaches_typed_handlers() {
    let server = RedisServer::start();
    let ns = namespace("bare");
    let b = bus(&server.url(), &ns).await;
    let chats = Recorder::default();
    let c = chats.clone();
    b.subscribe(move |m: ChatMessage| {
        let c = c.clone();
        async move { c.push(m.text) }
    })
    .await
    .unwrap();
    let orders = Recorder::default();
    let o = orders.clone();
    b.subscribe_with(
        move |ev: OrderCreated, ctx: Context| {
            let o = o.clone();
            async move { o.push((ev, ctx.metadata().event_type.clone(), ctx.id().to_owned())) }
        },
        HandlerOptions::new().group("billing"),
    )
    .await
    .unwrap();

    // What `redis-cli PUBLISH` and `redis-cli XADD` would send.
    let mut raw = plain(&server.url()).await;
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(b.channel_of::<ChatMessage>())
        .arg(r#"{"text":"from redis-cli"}"#)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let entry_id: String = redis::cmd("XADD")
        .arg(b.channel_of::<OrderCreated>())
        .arg("*")
        .arg("data")
        .arg(r#"{"order_id":42,"amount_cents":999}"#)
        .query_async(&mut raw)
        .await
        .unwrap();

    assert!(wait_until(PATIENCE, || chats.len() == 1 && orders.len() == 1).await);
    assert_eq!(chats.items(), vec!["from redis-cli".to_owned()]);
    let (order, event_type, id) = orders.items().remove(0);
    assert_eq!(
        order,
        OrderCreated {
            order_id: 42,
            amount_cents: 999
        }
    );
    // A bare payload gets the subscription's event name and the entry id as its id.
    assert_eq!(event_type, "shop.OrderCreated");
    assert_eq!(id, entry_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_eventbus_publishes_is_plain_cloudevents_json() {
    let server = RedisServer::start();
    let ns = namespace("cloudevents");
    let b = builder_with_source(&server.url(), &ns).await;

    // A plain pub/sub subscriber, as any Redis client library has.
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(b.channel_of::<ChatMessage>())
        .await
        .unwrap();
    let receipt = b.publish(&ChatMessage { text: "hi".into() }).await.unwrap();
    assert_eq!(receipt.receivers, Some(1));
    let msg = tokio::time::timeout(PATIENCE, pubsub.on_message().next())
        .await
        .expect("a message within the timeout")
        .expect("the subscription is open");
    let doc: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    assert_eq!(doc["specversion"], "1.0");
    assert_eq!(doc["type"], "chat.Message");
    assert_eq!(doc["source"], "billing-service");
    assert_eq!(doc["id"], receipt.event_id);
    assert_eq!(doc["datacontenttype"], "application/json");
    assert!(doc["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(doc["data"], serde_json::json!({ "text": "hi" }));

    // A stream entry: the same attributes as fields, `data` holding the payload JSON.
    let receipt = b
        .publish(&OrderCreated {
            order_id: 1,
            amount_cents: 250,
        })
        .await
        .unwrap();
    let mut raw = plain(&server.url()).await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(b.channel_of::<OrderCreated>())
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let (id, fields) = &entries[0];
    assert_eq!(Some(id), receipt.stream_id.as_ref());
    // One field, `event`: the same CloudEvents JSON document a pub/sub subscriber gets.
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!(fields[0].0, "event");
    let doc: serde_json::Value = serde_json::from_str(&fields[0].1).unwrap();
    assert_eq!(doc["specversion"], "1.0");
    assert_eq!(doc["type"], "shop.OrderCreated");
    assert_eq!(doc["source"], "billing-service");
    assert_eq!(doc["id"], receipt.event_id);
    assert_eq!(
        doc["data"],
        serde_json::json!({ "order_id": 1, "amount_cents": 250 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_producer_may_write_attributes_as_fields() {
    let server = RedisServer::start();
    let ns = namespace("binary-mode");
    let b = bus(&server.url(), &ns).await;
    let orders = Recorder::default();
    let o = orders.clone();
    b.subscribe(move |ev: OrderCreated, ctx: Context| {
        let o = o.clone();
        async move {
            o.push((ev, ctx.metadata().id.clone(), ctx.metadata().source.clone()));
        }
    })
    .await
    .unwrap();
    // CloudEvents binary mode: one field per attribute, the payload in `data`.
    let mut raw = plain(&server.url()).await;
    let _: String = redis::cmd("XADD")
        .arg(b.channel_of::<OrderCreated>())
        .arg("*")
        .arg(&[
            ("specversion", "1.0"),
            ("id", "py-1"),
            ("source", "python-checkout"),
            ("type", "shop.OrderCreated"),
            ("data", r#"{"order_id":7,"amount_cents":70}"#),
        ])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(wait_until(PATIENCE, || orders.len() == 1).await);
    let (order, id, source) = orders.items().remove(0);
    assert_eq!(order.order_id, 7);
    assert_eq!((id.as_str(), source.as_str()), ("py-1", "python-checkout"));
}

async fn builder_with_source(url: &str, ns: &str) -> Bus {
    common::builder(url, ns)
        .await
        .source("billing-service")
        .build()
        .unwrap()
}

/// The service under test: charge positive orders, refuse negative ones for good.
async fn charge(ev: OrderCreated, ctx: Context) -> Result<(), HandlerError> {
    if ev.amount_cents < 0 {
        return Err(HandlerError::permanent(format!(
            "negative amount {}",
            ev.amount_cents
        )));
    }
    ctx.publish(&PaymentRequested {
        order_id: ev.order_id,
    })
    .await?;
    Ok(())
}

/// One test body for every transport.
async fn order_flow(bus: Bus) {
    let payments = Recorder::default();
    let p = payments.clone();
    bus.subscribe_with(charge, HandlerOptions::new().group("billing"))
        .await
        .unwrap();
    bus.subscribe_with(
        move |ev: PaymentRequested, ctx: Context| {
            let p = p.clone();
            async move { p.push((ev.order_id, ctx.correlation_id().to_owned())) }
        },
        HandlerOptions::new().group("audit"),
    )
    .await
    .unwrap();

    let first = bus
        .publish(&OrderCreated {
            order_id: 1,
            amount_cents: 100,
        })
        .await
        .unwrap();
    bus.publish(&OrderCreated {
        order_id: 2,
        amount_cents: -5,
    })
    .await
    .unwrap();
    bus.publish(&OrderCreated {
        order_id: 3,
        amount_cents: 300,
    })
    .await
    .unwrap();

    assert!(
        wait_until(PATIENCE, || payments.len() == 2).await,
        "{:?}",
        payments.items()
    );
    let mut paid = payments.items();
    paid.sort();
    assert_eq!(
        paid.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![1, 3]
    );
    // The payment carries the order's correlation (its id, as it started the conversation).
    assert_eq!(paid[0].1, first.event_id);

    let dead = eventually(PATIENCE, async || {
        let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .expect("the negative order was not dead-lettered");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "negative amount -5");
    assert_eq!(dead[0].deliveries, 1);
    assert_eq!(dead[0].event.as_ref().unwrap().order_id, 2);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_flow_on_memory() {
    tokio::time::timeout(Duration::from_secs(30), order_flow(Bus::memory()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_flow_on_redis() {
    let server = RedisServer::start();
    let b = bus(&server.url(), &namespace("flow")).await;
    tokio::time::timeout(Duration::from_secs(30), order_flow(b))
        .await
        .unwrap();
}
