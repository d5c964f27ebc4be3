//! Ephemeral events over Redis pub/sub: fan-out, patterns, slow subscribers, reconnects,
//! dead-letter replay.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    PATIENCE, Recorder, RedisServer, builder, bus, eventually, namespace, wait_until,
    wait_until_async,
};
use eventbus_core::PatternMessage;
use eventbus_core::prelude::*;
use eventbus_redis::{RedisOptions, RedisTransport};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "chat.Message")]
struct ChatMessage {
    text: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, channel = "tenant.{tenant}.presence")]
struct UserOnline {
    tenant: String,
    user_id: u64,
}

fn recorder_handler(
    rec: &Recorder<String>,
) -> impl Fn(ChatMessage) -> std::future::Ready<()> + Clone + Send + Sync + 'static {
    let rec = rec.clone();
    move |m: ChatMessage| {
        rec.push(m.text);
        std::future::ready(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscriber_across_buses() {
    let server = RedisServer::start();
    let ns = namespace("fanout");
    let a = bus(&server.url(), &ns).await;
    let b = bus(&server.url(), &ns).await;
    let c = bus(&server.url(), &ns).await;
    let recs: Vec<Recorder<String>> = (0..4).map(|_| Recorder::default()).collect();
    a.subscribe(recorder_handler(&recs[0])).await.unwrap();
    b.subscribe(recorder_handler(&recs[1])).await.unwrap();
    c.subscribe(recorder_handler(&recs[2])).await.unwrap();
    // A second handler on bus `c` shares its Redis subscription.
    c.subscribe(recorder_handler(&recs[3])).await.unwrap();

    let publisher = bus(&server.url(), &ns).await;
    let receipt = publisher
        .publish(&ChatMessage {
            text: "hello".into(),
        })
        .await
        .unwrap();
    // One pub/sub connection per transport: three receivers for four handlers.
    assert_eq!(receipt.receivers, Some(3));
    assert!(receipt.stream_id.is_none());

    let all = || recs.iter().all(|r| r.len() == 1);
    assert!(
        wait_until(PATIENCE, all).await,
        "not every subscriber got the message"
    );
    for r in &recs {
        assert_eq!(r.items(), vec!["hello".to_owned()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscriptions_deliver_with_the_concrete_channel() {
    let server = RedisServer::start();
    let ns = namespace("pattern");
    let typed_bus = bus(&server.url(), &ns).await;
    let raw_bus = bus(&server.url(), &ns).await;

    let typed: Recorder<(String, String)> = Recorder::default();
    let t = typed.clone();
    typed_bus
        .subscribe(move |ev: UserOnline, ctx: Context| {
            let t = t.clone();
            async move { t.push((ev.tenant, ctx.channel().to_owned())) }
        })
        .await
        .unwrap();
    let raw: Recorder<(String, u64)> = Recorder::default();
    let r = raw.clone();
    raw_bus
        .subscribe_pattern("tenant.*.presence", move |msg: PatternMessage| {
            let r = r.clone();
            async move {
                let body: serde_json::Value = msg.json()?;
                r.push((
                    msg.channel().to_owned(),
                    body["user_id"].as_u64().unwrap_or(0),
                ));
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();

    let publisher = bus(&server.url(), &ns).await;
    for (tenant, user_id) in [("acme", 1), ("globex", 2)] {
        let receipt = publisher
            .publish(&UserOnline {
                tenant: tenant.into(),
                user_id,
            })
            .await
            .unwrap();
        assert_eq!(receipt.channel, format!("{ns}.tenant.{tenant}.presence"));
        assert_eq!(receipt.receivers, Some(2));
    }

    assert!(wait_until(PATIENCE, || typed.len() == 2 && raw.len() == 2).await);
    let mut typed = typed.items();
    typed.sort();
    assert_eq!(
        typed,
        vec![
            ("acme".to_owned(), format!("{ns}.tenant.acme.presence")),
            ("globex".to_owned(), format!("{ns}.tenant.globex.presence")),
        ]
    );
    let mut raw = raw.items();
    raw.sort();
    assert_eq!(
        raw,
        vec![
            (format!("{ns}.tenant.acme.presence"), 1),
            (format!("{ns}.tenant.globex.presence"), 2),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_loses_the_oldest_messages_and_counts_them() {
    let server = RedisServer::start();
    let ns = namespace("slow");
    let sub = builder(&server.url(), &ns)
        .await
        .configure(|c| c.subscriber_capacity = 2)
        .build()
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    sub.subscribe(move |_m: ChatMessage| {
        let g = g.clone();
        async move {
            if let Ok(permit) = g.acquire().await {
                permit.forget();
            }
        }
    })
    .await
    .unwrap();

    let publisher = bus(&server.url(), &ns).await;
    for i in 0..10 {
        publisher
            .publish(&ChatMessage {
                text: i.to_string(),
            })
            .await
            .unwrap();
    }
    // One message in the handler, two in the buffer: at least seven are dropped.
    assert!(
        wait_until(PATIENCE, || sub.stats().dropped >= 7).await,
        "{:?}",
        sub.stats()
    );
    gate.add_permits(10);
    assert!(
        wait_until(PATIENCE, || {
            let s = sub.stats();
            s.handled + s.dropped == 10
        })
        .await,
        "{:?}",
        sub.stats()
    );
    assert!(sub.stats().handled <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let ns = namespace("restart-pubsub");
    let sub = bus(&server.url(), &ns).await;
    let rec = Recorder::default();
    sub.subscribe(recorder_handler(&rec)).await.unwrap();
    let publisher = bus(&server.url(), &ns).await;
    publisher
        .publish(&ChatMessage {
            text: "before".into(),
        })
        .await
        .unwrap();
    assert!(wait_until(PATIENCE, || rec.len() == 1).await);

    server.restart();

    let back = publish_until(&publisher, || {
        rec.items().iter().any(|t| t.starts_with("after-"))
    })
    .await;
    assert!(
        back,
        "the subscriber never received again after the restart"
    );
    assert!(sub.stats().reconnects >= 1, "{:?}", sub.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_message_is_replayed_on_its_channel() {
    let server = RedisServer::start();
    let ns = namespace("replay-pubsub");
    let b = bus(&server.url(), &ns).await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rec = Recorder::default();
    let (br, r) = (broken.clone(), rec.clone());
    b.subscribe_with(
        move |m: ChatMessage| {
            let (br, r) = (br.clone(), r.clone());
            async move {
                if br.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(HandlerError::new("renderer down"));
                }
                r.push(m.text);
                Ok(())
            }
        },
        HandlerOptions::new().max_deliveries(1),
    )
    .await
    .unwrap();
    b.publish(&ChatMessage {
        text: "again".into(),
    })
    .await
    .unwrap();
    let dlq = b.dead_letter_key_of::<ChatMessage>();
    let transport = b.transport().clone();
    let dead = eventually(PATIENCE, async || {
        let dead = transport.dead_letters(&dlq, 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .expect("nothing was dead-lettered");
    assert_eq!(dead[0].letter.channel, b.channel_of::<ChatMessage>());

    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let receipt = transport
        .replay_dead_letter(&dlq, &dead[0].id)
        .await
        .unwrap();
    assert_eq!(receipt.receivers, Some(1));
    assert!(wait_until(PATIENCE, || rec.len() == 1).await);
    assert_eq!(rec.items(), vec!["again".to_owned()]);
    assert!(transport.dead_letters(&dlq, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_an_outage_longer_than_the_reconnect_attempts() {
    let mut server = RedisServer::start();
    let ns = namespace("outage");
    // Reconnection attempts give up after about half a second with this setting.
    let options = RedisOptions::default().reconnect_max_delay(Duration::from_millis(50));
    let transport = RedisTransport::connect_with(&server.url(), options)
        .await
        .unwrap();
    let sub = Bus::builder()
        .transport(transport)
        .namespace(&ns)
        .build()
        .unwrap();
    let rec = Recorder::default();
    sub.subscribe(recorder_handler(&rec)).await.unwrap();

    server.kill();
    // The outage itself: longer than every reconnection attempt of the connection manager.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.resume();

    let publisher = bus(&server.url(), &ns).await;
    let back = publish_until(&publisher, || rec.len() > 0).await;
    assert!(back, "the subscriber never received again after the outage");
}

/// Publishes `after-N` chat messages until `arrived()` holds; false after `PATIENCE`. Messages
/// published while a subscription is being restored are lost (pub/sub is at most once), so one
/// message is not enough to tell whether the subscriber is back.
async fn publish_until(publisher: &Bus, arrived: impl Fn() -> bool) -> bool {
    let mut n = 0;
    wait_until_async(PATIENCE, async || {
        n += 1;
        let _ = publisher
            .publish(&ChatMessage {
                text: format!("after-{n}"),
            })
            .await;
        // Give the message time to arrive before the next one is sent.
        tokio::time::sleep(Duration::from_millis(20)).await;
        arrived()
    })
    .await
}
