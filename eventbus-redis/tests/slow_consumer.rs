//! Slow consumers: a stalled pub/sub subscriber stays bounded in memory and reports what it
//! dropped; a durable group's backlog stays in Redis, not in the consumer's memory.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{PATIENCE, Recorder, RedisServer, namespace, wait_until, wait_until_async};
use eventbus_core::BusConfig;
use eventbus_core::prelude::*;
use eventbus_redis::RedisTransport;
use tokio::sync::Semaphore;

/// A large ephemeral event (about 64 KiB on the wire).
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(ephemeral, name = "video.Frame")]
struct Frame {
    n: u32,
    pixels: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

const FRAME_BYTES: usize = 64 * 1024;
const FRAMES: u32 = 200;
const BUFFER_BYTES: usize = 1 << 20;

async fn bus_on(
    transport: &RedisTransport,
    ns: &str,
    configure: impl FnOnce(&mut BusConfig),
) -> Bus {
    Bus::builder()
        .transport(transport.clone())
        .namespace(ns)
        .configure(configure)
        .build()
        .expect("valid bus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_keeps_a_bounded_buffer_and_counts_what_it_dropped() {
    let server = RedisServer::start();
    let ns = namespace("stalled");
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    // 1 MiB of buffer for a subscriber of 64 KiB frames: 16 frames at most.
    let subscriber = bus_on(&transport, &ns, |c| {
        c.subscriber_capacity_bytes = BUFFER_BYTES
    })
    .await;
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let seen = Recorder::default();
    let (g, e, s) = (gate.clone(), entered.clone(), seen.clone());
    subscriber
        .subscribe(move |frame: Frame| {
            let (g, e, s) = (g.clone(), e.clone(), s.clone());
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                // Stalls until the test opens the gate.
                let _permit = g.acquire().await;
                s.push(frame.n);
            }
        })
        .await
        .unwrap();

    let publisher = bus_on(&transport, &ns, |_| {}).await;
    let pixels = "x".repeat(FRAME_BYTES);
    publisher
        .publish(&Frame {
            n: 0,
            pixels: pixels.clone(),
        })
        .await
        .unwrap();
    // The handler holds frame 0; everything after it waits in the buffer or is dropped.
    assert!(wait_until(PATIENCE, || entered.load(Ordering::SeqCst) == 1).await);
    for n in 1..FRAMES {
        let receipt = publisher
            .publish(&Frame {
                n,
                pixels: pixels.clone(),
            })
            .await
            .unwrap();
        assert_eq!(receipt.receivers, Some(1));
    }
    // Each frame weighs a little more than 64 KiB with its envelope: at most 15 fit in 1 MiB.
    let max_buffered = (BUFFER_BYTES / FRAME_BYTES) as u64;
    let min_dropped = u64::from(FRAMES) - 1 - max_buffered;
    assert!(
        wait_until(PATIENCE, || subscriber.stats().dropped >= min_dropped).await,
        "dropped {} of {} frames, expected at least {min_dropped}",
        subscriber.stats().dropped,
        FRAMES - 1
    );

    gate.add_permits(FRAMES as usize);
    let dropped = subscriber.stats().dropped;
    // Every frame is handled or counted as dropped: none vanishes unreported.
    let expected = FRAMES as usize - dropped as usize;
    assert!(wait_until(PATIENCE, || seen.len() == expected).await);
    let seen = seen.items();
    // Frame 0 was in the handler; the buffer kept the newest frames, in order.
    assert_eq!(seen[0], 0);
    assert_eq!(*seen.last().unwrap(), FRAMES - 1);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(
        (seen.len() - 1) as u64 <= max_buffered,
        "{} buffered",
        seen.len() - 1
    );
    println!(
        "FIGURES slow_subscriber: published={FRAMES} frame_bytes={FRAME_BYTES} buffer_bytes={BUFFER_BYTES} \
         handled={} dropped={dropped}",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_group_reads_no_more_than_it_handles_and_the_backlog_stays_in_redis() {
    const BACKLOG: u32 = 2_000;
    const CONCURRENCY: usize = 4;
    let server = RedisServer::start();
    let ns = namespace("backlog");
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let publisher = bus_on(&transport, &ns, |_| {}).await;
    let events: Vec<_> = (0..BACKLOG)
        .map(|order_id| OrderCreated { order_id })
        .collect();
    publisher.publish_all(&events).await.unwrap();

    let consumer = bus_on(&transport, &ns, |_| {}).await;
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (g, e, h) = (gate.clone(), entered.clone(), handled.clone());
    consumer
        .subscribe_with(
            move |_: OrderCreated| {
                let (g, e, h) = (g.clone(), e.clone(), h.clone());
                async move {
                    e.fetch_add(1, Ordering::SeqCst);
                    let _permit = g.acquire().await;
                    h.fetch_add(1, Ordering::SeqCst);
                }
            },
            HandlerOptions::new().group("slow").concurrency(CONCURRENCY),
        )
        .await
        .unwrap();

    let stream = consumer.channel_of::<OrderCreated>();
    assert!(wait_until(PATIENCE, || entered.load(Ordering::SeqCst) == CONCURRENCY).await);
    // Only what the handlers hold was read: Redis keeps the rest, unread.
    assert_eq!(
        transport.pending_count(&stream, "slow").await.unwrap(),
        CONCURRENCY as u64
    );
    assert_eq!(
        transport.stream_len(&stream).await.unwrap(),
        u64::from(BACKLOG)
    );
    assert_eq!(entered.load(Ordering::SeqCst), CONCURRENCY);

    gate.add_permits(BACKLOG as usize);
    assert!(
        wait_until(PATIENCE, || handled.load(Ordering::SeqCst)
            == BACKLOG as usize)
        .await
    );
    assert!(
        wait_until_async(PATIENCE, async || {
            transport.pending_count(&stream, "slow").await.unwrap() == 0
        })
        .await
    );
    println!(
        "FIGURES slow_group: backlog={BACKLOG} concurrency={CONCURRENCY} read_while_stalled={CONCURRENCY} handled={BACKLOG} pending_after=0"
    );
}
