//! Services not written in Rust: what a plain Redis client sends reaches typed handlers, and what
//! eventbus sends is plain CloudEvents JSON. And the same handler code behaves the same on the
//! in-memory bus and on Redis.

mod common;

use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, bus, eventually, namespace, plain, wait_until};
use eventbus_core::Error;
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

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "users.FindUser", reply = UserFound)]
struct FindUser {
    id: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct UserFound {
    name: String,
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
            async move {
                o.push((
                    ev,
                    ctx.metadata().event_type().to_owned(),
                    ctx.id().to_owned(),
                ))
            }
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
            o.push((
                ev,
                ctx.metadata().id().to_owned(),
                ctx.metadata().source().to_owned(),
            ));
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

/// Records every `OrderCreated` and `ChatMessage` handled on `b`.
async fn record_orders_and_chats(
    b: &Bus,
    orders: &Recorder<OrderCreated>,
    chats: &Recorder<String>,
) {
    let o = orders.clone();
    b.subscribe(move |ev: OrderCreated| {
        let o = o.clone();
        async move { o.push(ev) }
    })
    .await
    .unwrap();
    let c = chats.clone();
    b.subscribe(move |m: ChatMessage| {
        let c = c.clone();
        async move { c.push(m.text) }
    })
    .await
    .unwrap();
}

/// `PUBLISH`es `doc`, then `XADD`s it as the `event` field of a stream entry.
async fn send_raw(
    raw: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    stream: &str,
    publish: &str,
    add: &str,
) {
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(publish)
        .query_async(raw)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("event")
        .arg(add)
        .query_async(raw)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_data_from_the_python_sdk_reaches_typed_handlers() {
    let server = RedisServer::start();
    let ns = namespace("base64");
    let b = bus(&server.url(), &ns).await;
    let (orders, chats) = (Recorder::default(), Recorder::default());
    record_orders_and_chats(&b, &orders, &chats).await;
    let mut raw = plain(&server.url()).await;
    // Verbatim what the Python SDK (`cloudevents` 2.2.0) writes for bytes data:
    // `JSONFormat().write(CloudEvent({"type": ..., "source": "/py", "id": ...}, data=b'...'))`.
    let chat = r#"{"type": "chat.Message", "source": "/py", "id": "py-b64-2", "specversion": "1.0", "time": "2026-12-01T14:28:49.858277Z", "data_base64": "eyJ0ZXh0IjoiYnl0ZXMgZnJvbSBweXRob24ifQ=="}"#;
    let order = r#"{"type": "shop.OrderCreated", "source": "/py", "id": "py-b64-1", "specversion": "1.0", "time": "2026-12-01T14:28:49.858153Z", "data_base64": "eyJvcmRlcl9pZCI6NSwiYW1vdW50X2NlbnRzIjo1MDB9"}"#;
    let (channel, stream) = (
        b.channel_of::<ChatMessage>(),
        b.channel_of::<OrderCreated>(),
    );
    send_raw(&mut raw, &channel, &stream, chat, order).await;
    // The same attributes one per field (binary mode) may carry `data_base64` too.
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&[
            ("specversion", "1.0"),
            ("id", "py-b64-3"),
            ("source", "/py"),
            ("type", "shop.OrderCreated"),
            (
                "data_base64",
                "eyJvcmRlcl9pZCI6NSwiYW1vdW50X2NlbnRzIjo1MDB9",
            ),
        ])
        .query_async(&mut raw)
        .await
        .unwrap();
    // Both `data` and `data_base64`, and base64 that is not: refused with the reason.
    let both = r#"{"specversion":"1.0","id":"bad-1","source":"/py","type":"shop.OrderCreated","data":{"order_id":6,"amount_cents":1},"data_base64":"eyJvcmRlcl9pZCI6NSwiYW1vdW50X2NlbnRzIjo1MDB9"}"#;
    let broken = r#"{"specversion":"1.0","id":"bad-2","source":"/py","type":"chat.Message","data_base64":"eyJ0ZXh0Ijoi!"}"#;
    send_raw(&mut raw, &channel, &stream, broken, both).await;

    let expected = OrderCreated {
        order_id: 5,
        amount_cents: 500,
    };
    assert!(
        wait_until(PATIENCE, || orders.len() == 2 && chats.len() == 1).await,
        "{:?} {:?}",
        orders.items(),
        chats.items()
    );
    assert_eq!(orders.items(), vec![expected.clone(), expected]);
    assert_eq!(chats.items(), vec!["bytes from python".to_owned()]);
    let dead = eventually(PATIENCE, async || {
        let dead = dead_letters::<OrderCreated>(&b).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .expect("the entry with data and data_base64 was not dead-lettered");
    assert!(
        dead[0]
            .reason
            .contains("both `data` and `data_base64`; CloudEvents allows only one"),
        "{}",
        dead[0].reason
    );
    assert!(wait_until(PATIENCE, || b.stats().undecodable == 2).await);
    let dead = dead_letters::<ChatMessage>(&b).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("`data_base64` is not valid base64"),
        "{}",
        dead[0].reason
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_of_another_type_is_refused_naming_both_types() {
    let server = RedisServer::start();
    let ns = namespace("foreign-type");
    let b = bus(&server.url(), &ns).await;
    let (orders, chats) = (Recorder::default(), Recorder::default());
    record_orders_and_chats(&b, &orders, &chats).await;
    let mut raw = plain(&server.url()).await;
    // Payloads that would parse into the handlers' types: only `type` tells them apart.
    let typing = r#"{"specversion":"1.0","id":"t-1","source":"/py","type":"chat.Typing","data":{"text":"..."}}"#;
    let refund = r#"{"specversion":"1.0","id":"r-1","source":"/py","type":"shop.RefundIssued","data":{"order_id":9,"amount_cents":-900}}"#;
    let (channel, stream) = (
        b.channel_of::<ChatMessage>(),
        b.channel_of::<OrderCreated>(),
    );
    send_raw(&mut raw, &channel, &stream, typing, refund).await;
    b.publish(&ChatMessage { text: "hi".into() }).await.unwrap();
    let order = OrderCreated {
        order_id: 1,
        amount_cents: 100,
    };
    b.publish(&order).await.unwrap();

    assert!(wait_until(PATIENCE, || orders.len() == 1 && chats.len() == 1).await);
    let dead = eventually(PATIENCE, async || {
        let dead = dead_letters::<OrderCreated>(&b).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .expect("the foreign-typed entry was not dead-lettered");
    assert_eq!(
        dead[0].reason,
        "CloudEvents type \"shop.RefundIssued\" does not match the handler's event type \
         \"shop.OrderCreated\""
    );
    assert_eq!(dead[0].deliveries, 1);
    assert!(wait_until(PATIENCE, || b.stats().undecodable == 2).await);
    assert_eq!(orders.items(), vec![order]);
    assert_eq!(chats.items(), vec!["hi".to_owned()]);
    b.shutdown().await;
}

/// A responder written without eventbus, as a Python service with the `cloudevents` SDK would
/// be: it SUBSCRIBEs to the request channel and PUBLISHes each reply to the request's `replyto`
/// channel, naming the request by its id. Every request it read is sent to the returned channel.
async fn foreign_responder(
    url: &str,
    channel: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel).await.unwrap();
    let mut out = plain(url).await;
    let (seen, requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let request: serde_json::Value =
                serde_json::from_slice(msg.get_payload_bytes()).unwrap_or_default();
            let (Some(id), Some(reply_to), Some(user)) = (
                request["id"].as_str(),
                request["replyto"].as_str(),
                request["data"]["id"].as_u64(),
            ) else {
                let _ = seen.send(request);
                continue;
            };
            // As `JSONFormat().write(CloudEvent(attributes, data=...))` writes them: user 0 is
            // an error (the `error` attribute, no data), user 2 is named by `correlationid`
            // only, the others by `causationid`.
            let reply = match user {
                0 => format!(
                    r#"{{"type": "users.UserFound", "source": "/py", "id": "py-rep-0", "causationid": "{id}", "error": "no user 0", "specversion": "1.0", "time": "2026-12-01T14:28:42.127624Z"}}"#
                ),
                2 => format!(
                    r#"{{"type": "users.UserFound", "source": "/py", "id": "py-rep-2", "correlationid": "{id}", "specversion": "1.0", "time": "2026-12-01T14:28:42.127587Z", "data": {{"name": "user-2"}}}}"#
                ),
                n => format!(
                    r#"{{"type": "users.UserFound", "source": "/py", "id": "py-rep-{n}", "causationid": "{id}", "specversion": "1.0", "time": "2026-12-01T14:28:42.127587Z", "data": {{"name": "user-{n}"}}}}"#
                ),
            };
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(reply_to)
                .arg(reply)
                .query_async(&mut out)
                .await;
            published.expect("PUBLISH of the reply");
            let _ = seen.send(request);
        }
    });
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_responder_answers_an_eventbus_request() {
    let server = RedisServer::start();
    let ns = namespace("foreign-responder");
    let b = bus(&server.url(), &ns).await;
    let mut requests = foreign_responder(&server.url(), &b.channel_of::<FindUser>()).await;

    let found = b.request(&FindUser { id: 7 }).await.unwrap();
    assert_eq!(found.name, "user-7");
    let by_correlation = b.request(&FindUser { id: 2 }).await.unwrap();
    assert_eq!(by_correlation.name, "user-2");
    let err = b.request(&FindUser { id: 0 }).await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "no user 0"),
        "{err}"
    );

    // What the responder read: the request, with where to answer.
    let request = tokio::time::timeout(PATIENCE, requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request["type"], "users.FindUser");
    assert_eq!(request["data"], serde_json::json!({ "id": 7 }));
    assert!(request["id"].as_str().is_some_and(|id| !id.is_empty()));
    // The bus's own reply channel: its instance name made unique to this process and bus.
    let reply_prefix = b.key(&format!("eventbus.reply.{}-", b.config().instance));
    assert!(
        request["replyto"]
            .as_str()
            .is_some_and(|to| to.starts_with(&reply_prefix)),
        "{}",
        request["replyto"]
    );
    assert_eq!(request.get("correlationid"), None);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_requester_gets_the_handlers_reply_on_its_own_channel() {
    let server = RedisServer::start();
    let ns = namespace("foreign-requester");
    let b = bus(&server.url(), &ns).await;
    b.subscribe(|q: FindUser| async move {
        if q.id == 0 {
            return Err(HandlerError::permanent("no user 0"));
        }
        Ok(UserFound {
            name: format!("user-{}", q.id),
        })
    })
    .await
    .unwrap();
    // The requester listens on a channel of its own choosing, then publishes the request there.
    let reply_channel = b.key("python.replies.1");
    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&reply_channel).await.unwrap();
    let mut raw = plain(&server.url()).await;
    let mut replies = Vec::new();
    for (id, user) in [("py-req-1", 7), ("py-req-2", 0)] {
        // As the Python SDK writes `CloudEvent({"type": "users.FindUser", "source": "/py",
        // "id": ..., "replyto": ...}, data={"id": ...})`.
        let request = format!(
            r#"{{"type": "users.FindUser", "source": "/py", "id": "{id}", "replyto": "{reply_channel}", "specversion": "1.0", "time": "2026-12-01T14:28:42.127336Z", "data": {{"id": {user}}}}}"#
        );
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(b.channel_of::<FindUser>())
            .arg(request)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(receivers, 1);
        let msg = tokio::time::timeout(PATIENCE, pubsub.on_message().next())
            .await
            .expect("a reply within the timeout")
            .expect("the subscription is open");
        assert_eq!(msg.get_channel_name(), reply_channel);
        let reply: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
        replies.push((id, reply));
    }
    for (id, reply) in &replies {
        assert_eq!(reply["specversion"], "1.0");
        assert_eq!(reply["type"], "eventbus.reply");
        assert_eq!(reply["causationid"], *id);
        assert_eq!(reply["correlationid"], *id);
    }
    assert_eq!(
        replies[0].1["data"],
        serde_json::json!({ "name": "user-7" })
    );
    assert_eq!(replies[0].1.get("error"), None);
    assert_eq!(replies[1].1["error"], "no user 0");
    assert_eq!(replies[1].1["data"], serde_json::Value::Null);
    b.shutdown().await;
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
