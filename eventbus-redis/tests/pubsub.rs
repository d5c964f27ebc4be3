//! Ephemeral events over Redis pub/sub, beyond the rules of the conformance suite
//! (`conformance.rs`): subscriptions come back after the server restarts or stays away longer
//! than the connection's own reconnection attempts.

mod common;

use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, bus, namespace, wait_until, wait_until_async};
use eventbus_core::prelude::*;
use eventbus_redis::{RedisOptions, RedisTransport};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "chat.Message")]
struct ChatMessage {
    text: String,
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
