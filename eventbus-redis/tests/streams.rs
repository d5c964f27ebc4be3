//! Durable events over Redis Streams: consumer groups, acks, retries, dead letters, trimming,
//! broadcast.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{
    PATIENCE, Recorder, RedisServer, builder, bus, eventually, namespace, plain, wait_until,
    wait_until_async,
};
use eventbus_core::Transport;
use eventbus_core::prelude::*;
use eventbus_core::testing::dead_letters;
use eventbus_redis::RedisTransport;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "metrics.Sample", max_len = 100)]
struct Sample {
    n: u32,
}

const FAST: HandlerOptions = HandlerOptions::new()
    .backoff(Duration::from_millis(10))
    .backoff_max(Duration::from_millis(20));

fn orders(range: std::ops::Range<u32>) -> Vec<OrderCreated> {
    range.map(|order_id| OrderCreated { order_id }).collect()
}

/// A bus and a handle on its transport, for introspection.
async fn bus_and_transport(url: &str, ns: &str) -> (Bus, RedisTransport) {
    let transport = RedisTransport::connect(url).await.unwrap();
    let bus = Bus::builder()
        .transport(transport.clone())
        .namespace(ns)
        .build()
        .unwrap();
    (bus, transport)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_consumers_in_one_group_handle_each_event_once() {
    let server = RedisServer::start();
    let ns = namespace("compete");
    let handled: Recorder<(&'static str, u32)> = Recorder::default();
    let mut buses = Vec::new();
    for name in ["a", "b"] {
        let b = bus(&server.url(), &ns).await;
        let h = handled.clone();
        b.subscribe_with(
            move |o: OrderCreated| {
                let h = h.clone();
                async move {
                    // Some work, so that both instances get a share.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    h.push((name, o.order_id));
                }
            },
            FAST.group("billing").concurrency(4),
        )
        .await
        .unwrap();
        buses.push(b);
    }
    let publisher = bus(&server.url(), &ns).await;
    let receipts = publisher.publish_all(&orders(0..40)).await.unwrap();
    assert_eq!(receipts.len(), 40);
    assert!(receipts.iter().all(|r| r.stream_id.is_some()));

    assert!(wait_until(PATIENCE, || handled.len() >= 40).await);
    let items = handled.items();
    let ids: BTreeSet<u32> = items.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), 40, "an event was handled twice: {items:?}");
    assert_eq!(items.len(), 40);
    for name in ["a", "b"] {
        assert!(
            items.iter().any(|(n, _)| *n == name),
            "instance {name} got nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_handles_every_event() {
    let server = RedisServer::start();
    let ns = namespace("groups");
    let b = bus(&server.url(), &ns).await;
    let billing: Recorder<u32> = Recorder::default();
    let shipping: Recorder<u32> = Recorder::default();
    for (group, rec) in [("billing", billing.clone()), ("shipping", shipping.clone())] {
        b.subscribe_with(
            move |o: OrderCreated| {
                let rec = rec.clone();
                async move { rec.push(o.order_id) }
            },
            FAST.group(group),
        )
        .await
        .unwrap();
    }
    b.publish_all(&orders(0..10)).await.unwrap();
    assert!(wait_until(PATIENCE, || billing.len() == 10 && shipping.len() == 10).await);
    assert_eq!(billing.items(), (0..10).collect::<Vec<_>>(), "in order");
    assert_eq!(shipping.items(), (0..10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_acked_only_after_the_handler_succeeded() {
    let server = RedisServer::start();
    let ns = namespace("ack");
    let (b, t) = bus_and_transport(&server.url(), &ns).await;
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
        FAST.group("billing"),
    )
    .await
    .unwrap();
    b.publish(&OrderCreated { order_id: 1 }).await.unwrap();
    let stream = b.channel_of::<OrderCreated>();

    assert!(wait_until(PATIENCE, || started.len() == 1).await);
    assert_eq!(t.pending_count(&stream, "billing").await.unwrap(), 1);
    gate.add_permits(1);
    let acked = wait_until_async(PATIENCE, async || {
        t.pending_count(&stream, "billing").await.unwrap() == 0
    })
    .await;
    assert!(acked, "the entry was never acknowledged");
    assert_eq!(b.stats().handled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_until_it_succeeds() {
    let server = RedisServer::start();
    let ns = namespace("retry");
    let (b, t) = bus_and_transport(&server.url(), &ns).await;
    let attempts = Recorder::default();
    let a = attempts.clone();
    b.subscribe_with(
        move |_o: OrderCreated, ctx: Context| {
            let a = a.clone();
            async move {
                a.push(ctx.attempt());
                if ctx.attempt() < 3 {
                    return Err(HandlerError::new("payment service unavailable"));
                }
                Ok(())
            }
        },
        FAST.group("billing"),
    )
    .await
    .unwrap();
    b.publish(&OrderCreated { order_id: 7 }).await.unwrap();
    assert!(wait_until(PATIENCE, || b.stats().handled == 1).await);
    assert_eq!(attempts.items(), vec![1, 2, 3]);
    let stream = b.channel_of::<OrderCreated>();
    assert!(
        wait_until_async(PATIENCE, async || {
            t.pending_count(&stream, "billing").await.unwrap() == 0
        })
        .await
    );
    assert!(dead_letters::<OrderCreated>(&b).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_goes_to_the_dead_letter_stream_after_max_deliveries() {
    let server = RedisServer::start();
    let ns = namespace("dlq");
    let (b, t) = bus_and_transport(&server.url(), &ns).await;
    b.subscribe_with(
        |_o: OrderCreated| async { Err::<(), _>(HandlerError::new("card declined")) },
        FAST.group("billing").max_deliveries(3),
    )
    .await
    .unwrap();
    b.publish(&OrderCreated { order_id: 9 }).await.unwrap();

    let dead = eventually(PATIENCE, async || {
        let dead = dead_letters::<OrderCreated>(&b).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .expect("nothing was dead-lettered");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "card declined");
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(
        dead[0].event.as_ref().unwrap(),
        &OrderCreated { order_id: 9 }
    );
    let stream = b.channel_of::<OrderCreated>();
    assert!(
        wait_until_async(PATIENCE, async || {
            t.pending_count(&stream, "billing").await.unwrap() == 0
        })
        .await,
        "the dead-lettered entry was not acknowledged"
    );
    assert_eq!(
        t.stream_len(&b.dead_letter_key_of::<OrderCreated>())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_entry_is_dead_lettered_without_blocking_the_next() {
    let server = RedisServer::start();
    let ns = namespace("garbage");
    let b = bus(&server.url(), &ns).await;
    let handled = Recorder::default();
    let h = handled.clone();
    b.subscribe_with(
        move |o: OrderCreated| {
            let h = h.clone();
            async move { h.push(o.order_id) }
        },
        FAST.group("billing"),
    )
    .await
    .unwrap();
    let stream = b.channel_of::<OrderCreated>();
    let mut raw = plain(&server.url()).await;
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("data")
        .arg("{not json")
        .query_async(&mut raw)
        .await
        .unwrap();
    b.publish(&OrderCreated { order_id: 2 }).await.unwrap();

    assert!(wait_until(PATIENCE, || handled.len() == 1).await);
    assert_eq!(handled.items(), vec![2]);
    let dead = eventually(PATIENCE, async || {
        let dead = dead_letters::<OrderCreated>(&b).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .expect("nothing was dead-lettered");
    assert!(dead[0].reason.contains("{not json"), "{}", dead[0].reason);
    assert_eq!(dead[0].deliveries, 1);
    assert!(dead[0].event.is_err());
    assert_eq!(b.stats().undecodable, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_len_keeps_the_stream_near_its_bound() {
    let server = RedisServer::start();
    let ns = namespace("max-len");
    let (b, t) = bus_and_transport(&server.url(), &ns).await;
    for chunk in 0..10 {
        let samples: Vec<Sample> = (0..100).map(|i| Sample { n: chunk * 100 + i }).collect();
        b.publish_all(&samples).await.unwrap();
    }
    let len = t.stream_len(&b.channel_of::<Sample>()).await.unwrap();
    // `MAXLEN ~` trims whole nodes of 100 entries: between N and about 2N remain.
    assert!((100..=200).contains(&len), "XLEN is {len}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_handlers_see_every_event_on_every_instance() {
    let server = RedisServer::start();
    let ns = namespace("broadcast");
    let publisher = bus(&server.url(), &ns).await;
    // Published before the handlers start: not seen in broadcast mode.
    publisher
        .publish(&OrderCreated { order_id: 0 })
        .await
        .unwrap();
    let recs: Vec<Recorder<u32>> = vec![Recorder::default(), Recorder::default()];
    let mut buses = Vec::new();
    for rec in &recs {
        let b = bus(&server.url(), &ns).await;
        let rec = rec.clone();
        b.subscribe_with(
            move |o: OrderCreated| {
                let rec = rec.clone();
                async move { rec.push(o.order_id) }
            },
            FAST.broadcast(),
        )
        .await
        .unwrap();
        buses.push(b);
    }
    publisher.publish_all(&orders(1..6)).await.unwrap();
    assert!(wait_until(PATIENCE, || recs.iter().all(|r| r.len() == 5)).await);
    for r in &recs {
        assert_eq!(r.items(), vec![1, 2, 3, 4, 5]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_can_be_replayed_to_its_stream() {
    let server = RedisServer::start();
    let ns = namespace("replay");
    let (b, t) = bus_and_transport(&server.url(), &ns).await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handled = Recorder::default();
    let (br, h) = (broken.clone(), handled.clone());
    b.subscribe_with(
        move |o: OrderCreated| {
            let (br, h) = (br.clone(), h.clone());
            async move {
                if br.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(HandlerError::new("database down"));
                }
                h.push(o.order_id);
                Ok(())
            }
        },
        FAST.group("billing").max_deliveries(1),
    )
    .await
    .unwrap();
    b.publish(&OrderCreated { order_id: 5 }).await.unwrap();
    let dlq = b.dead_letter_key_of::<OrderCreated>();
    let dead = eventually(PATIENCE, async || {
        let dead = t.dead_letters(&dlq, 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await
    .expect("nothing was dead-lettered");
    assert_eq!(dead[0].letter.reason, "database down");
    assert_eq!(dead[0].letter.group, "billing");

    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let receipt = t.replay_dead_letter(&dlq, &dead[0].id).await.unwrap();
    assert_eq!(receipt.channel, b.channel_of::<OrderCreated>());
    assert!(receipt.stream_id.is_some());
    assert!(wait_until(PATIENCE, || handled.len() == 1).await);
    assert_eq!(handled.items(), vec![5]);
    assert!(t.dead_letters(&dlq, 10).await.unwrap().is_empty());
    assert!(
        t.replay_dead_letter(&dlq, &dead[0].id).await.is_err(),
        "replayed twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_now_skips_earlier_events() {
    let server = RedisServer::start();
    let ns = namespace("now");
    let b = builder(&server.url(), &ns)
        .await
        .configure(|c| c.start_from = eventbus_core::transport::StartFrom::Now)
        .build()
        .unwrap();
    b.publish(&OrderCreated { order_id: 1 }).await.unwrap();
    let handled = Recorder::default();
    let h = handled.clone();
    b.subscribe_with(
        move |o: OrderCreated| {
            let h = h.clone();
            async move { h.push(o.order_id) }
        },
        FAST.group("late"),
    )
    .await
    .unwrap();
    b.publish(&OrderCreated { order_id: 2 }).await.unwrap();
    assert!(wait_until(PATIENCE, || handled.len() == 1).await);
    assert_eq!(handled.items(), vec![2]);
}
