//! The idempotency guard of `dedup` handlers on the in-memory transport, beyond the rules of the
//! conformance suite (skips, failed calls, replays): where the marks are kept, that they expire,
//! the options it refuses, and a consumer that handled entries and died before acking them.
//! (A bare payload without an id, marked by its entry id, is tested on Redis:
//! `eventbus-redis/tests/dedup.rs`.)
#![allow(missing_docs)] // test types

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{WAIT, wait_until};
use eventbus_core::activity::Activity;
use eventbus_core::envelope::{Encoded, Metadata};
use eventbus_core::prelude::*;
use eventbus_core::transport::{
    ConsumerSpec, DeadLetter, DeadLetterEntry, Delivery, Outgoing, StreamConsumer, SubscribeSpec,
    Subscription,
};
use eventbus_core::{Error, MemoryTransport, Transport};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.orders.OrderCreated")]
pub struct OrderCreated {
    pub n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "test.live.Tick")]
pub struct Tick {
    pub n: u32,
}

type Seen = Arc<Mutex<Vec<u32>>>;

const DAY: Duration = HandlerOptions::DEFAULT_DEDUP_TTL;

fn options(group: &'static str) -> HandlerOptions {
    HandlerOptions::new()
        .group(group)
        .backoff(Duration::from_millis(1))
        .backoff_max(Duration::from_millis(5))
}

async fn record(bus: &Bus, opts: HandlerOptions) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |ev: OrderCreated| {
            let s = s.clone();
            async move { s.lock().unwrap().push(ev.n) }
        },
        opts,
    )
    .await
    .unwrap();
    seen
}

fn sorted(seen: &Seen) -> Vec<u32> {
    let mut v = seen.lock().unwrap().clone();
    v.sort_unstable();
    v
}

/// `OrderCreated { n }` with the event id `id` (empty: no id, as a foreign producer sends it).
fn order(id: &str, n: u32) -> Encoded {
    let meta = Metadata::new(id, "tests", "test.orders.OrderCreated");
    Encoded::new(meta, &OrderCreated { n }).unwrap()
}

/// Adds `message` to the stream of `OrderCreated` as it is (the same id twice is a producer
/// that retried its publish); returns the entry id.
async fn append(bus: &Bus, message: Encoded) -> String {
    bus.transport()
        .publish(Outgoing {
            channel: bus.channel_of::<OrderCreated>(),
            durability: Durability::Durable,
            max_len: None,
            message,
        })
        .await
        .unwrap()
        .stream_id
        .unwrap()
}

/// The marks are kept per group, under the keys the Redis transport uses, and only for groups
/// with `dedup`. (That a group skips what it marked is a rule of the conformance suite.)
#[tokio::test]
async fn marks_are_kept_per_dedup_group_under_the_redis_keys() {
    let bus = Bus::memory();
    record(&bus, options("billing").dedup(DAY)).await;
    record(&bus, options("audit").dedup(DAY)).await;
    record(&bus, options("plain")).await;
    append(&bus, order("ev-1", 1)).await;
    eventbus_core::testing::settle(&bus).await;
    for group in ["billing", "audit"] {
        let key = format!("eventbus.dedup:test.orders.OrderCreated:{group}:ev-1");
        assert!(bus.transport().dedup_seen(&key).await.unwrap(), "{key}");
    }
    let unmarked = "eventbus.dedup:test.orders.OrderCreated:plain:ev-1";
    assert!(!bus.transport().dedup_seen(unmarked).await.unwrap());
}

#[tokio::test]
async fn a_mark_expires_after_its_ttl() {
    let bus = Bus::memory();
    // Long enough for the second append to come well before it expires on a busy machine.
    let seen = record(&bus, options("billing").dedup(Duration::from_secs(1))).await;
    append(&bus, order("ev-1", 1)).await;
    eventbus_core::testing::settle(&bus).await;
    append(&bus, order("ev-1", 1)).await;
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(sorted(&seen), vec![1]);
    assert_eq!(bus.stats().duplicates_skipped, 1);

    let key = "eventbus.dedup:test.orders.OrderCreated:billing:ev-1";
    let mut expired = false;
    for _ in 0..500 {
        if !bus.transport().dedup_seen(key).await.unwrap() {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(expired, "the mark outlived its ttl of 1 s by 4 s");
    append(&bus, order("ev-1", 1)).await;
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(
        sorted(&seen),
        vec![1, 1],
        "handled again once the mark expired"
    );
}

#[tokio::test]
async fn dedup_on_an_ephemeral_event_or_a_broadcast_handler_is_refused() {
    let bus = Bus::memory();
    let err = bus
        .subscribe_with(|_: Tick| async {}, options("live").dedup(DAY))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("`dedup` needs a durable event") && text.contains("test.live.Tick"),
        "{text}"
    );
    let err = bus
        .subscribe_with(
            |_: OrderCreated| async {},
            HandlerOptions::new().broadcast().dedup(DAY),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err:?}");
    assert!(err.to_string().contains("`broadcast`"), "{err}");
}

#[tokio::test]
async fn a_transport_without_marks_refuses_dedup_handlers_at_subscribe() {
    let bus = Bus::builder()
        .transport(NoMarks(MemoryTransport::new()))
        .build()
        .unwrap();
    let err = bus
        .subscribe_with(|_: OrderCreated| async {}, options("g").dedup(DAY))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot keep the marks"), "{err}");
    // Without dedup the same transport is fine.
    bus.subscribe_with(|_: OrderCreated| async {}, options("g"))
        .await
        .unwrap();
    bus.shutdown().await;
}

/// The crash the guard is for: a consumer handled entries, and died before its acks reached
/// the store. The consumer that claims them skips every one its group marked.
#[tokio::test]
async fn entries_handled_by_a_consumer_that_died_before_acking_are_not_handled_again() {
    let shared = MemoryTransport::new();
    for dedup in [false, true] {
        let namespace = if dedup { "with-dedup" } else { "without" };
        let opts = if dedup {
            options("billing").dedup(DAY)
        } else {
            options("billing")
        };
        // The instance that dies: its acks never arrive.
        let doomed = Bus::builder()
            .transport(LostAcks(shared.clone()))
            .namespace(namespace)
            .instance("doomed")
            .build()
            .unwrap();
        let first = record(&doomed, opts).await;
        for n in 1..=5 {
            doomed.publish(&OrderCreated { n }).await.unwrap();
        }
        wait_until("the doomed instance to handle all five", WAIT, || {
            first.lock().unwrap().len() == 5
        })
        .await;
        let stream = doomed.channel_of::<OrderCreated>();
        assert_eq!(shared.pending(&stream, "billing").len(), 5);
        doomed.shutdown().await;

        let survivor = Bus::builder()
            .transport(shared.clone())
            .namespace(namespace)
            .instance("survivor")
            .configure(|c| c.claim_idle = Duration::from_millis(50))
            .build()
            .unwrap();
        let second = record(&survivor, opts).await;
        wait_until("the survivor to claim every pending entry", WAIT, || {
            shared.pending(&stream, "billing").is_empty()
        })
        .await;
        eventbus_core::testing::settle(&survivor).await;
        if dedup {
            assert_eq!(sorted(&second), Vec::<u32>::new());
            assert_eq!(survivor.stats().duplicates_skipped, 5);
        } else {
            assert_eq!(sorted(&second), vec![1, 2, 3, 4, 5], "handled twice");
            assert_eq!(survivor.stats().duplicates_skipped, 0);
        }
        survivor.shutdown().await;
    }
}

/// A memory transport whose consumers' acks are lost: what a process that dies right after
/// its handlers returned leaves behind.
struct LostAcks(MemoryTransport);

struct LostAcksConsumer(Arc<dyn StreamConsumer>);

#[async_trait]
impl StreamConsumer for LostAcksConsumer {
    async fn fetch(&self, max: usize) -> eventbus_core::Result<Vec<Delivery>> {
        self.0.fetch(max).await
    }

    async fn ack(&self, _entry_ids: &[String]) -> eventbus_core::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Transport for LostAcks {
    fn name(&self) -> &'static str {
        "memory"
    }
    async fn publish(&self, message: Outgoing) -> eventbus_core::Result<Receipt> {
        self.0.publish(message).await
    }
    async fn subscribe(&self, spec: SubscribeSpec) -> eventbus_core::Result<Box<dyn Subscription>> {
        self.0.subscribe(spec).await
    }
    async fn consume(&self, spec: ConsumerSpec) -> eventbus_core::Result<Arc<dyn StreamConsumer>> {
        let inner = self.0.consume(spec).await?;
        Ok(Arc::new(LostAcksConsumer(inner)))
    }
    async fn dead_letter(&self, letter: DeadLetter) -> eventbus_core::Result<()> {
        self.0.dead_letter(letter).await
    }
    async fn dead_letters(
        &self,
        dlq: &str,
        count: usize,
    ) -> eventbus_core::Result<Vec<DeadLetterEntry>> {
        self.0.dead_letters(dlq, count).await
    }
    async fn dedup_seen(&self, key: &str) -> eventbus_core::Result<bool> {
        self.0.dedup_seen(key).await
    }
    async fn dedup_mark(&self, key: &str, ttl: Duration) -> eventbus_core::Result<()> {
        self.0.dedup_mark(key, ttl).await
    }
    fn activity(&self) -> Option<Activity> {
        None
    }
    async fn close(&self) {
        self.0.close().await;
    }
}

/// A transport that keeps no dedup marks (the trait's defaults).
struct NoMarks(MemoryTransport);

#[async_trait]
impl Transport for NoMarks {
    fn name(&self) -> &'static str {
        "no-marks"
    }
    async fn publish(&self, message: Outgoing) -> eventbus_core::Result<Receipt> {
        self.0.publish(message).await
    }
    async fn subscribe(&self, spec: SubscribeSpec) -> eventbus_core::Result<Box<dyn Subscription>> {
        self.0.subscribe(spec).await
    }
    async fn consume(&self, spec: ConsumerSpec) -> eventbus_core::Result<Arc<dyn StreamConsumer>> {
        self.0.consume(spec).await
    }
    async fn dead_letter(&self, letter: DeadLetter) -> eventbus_core::Result<()> {
        self.0.dead_letter(letter).await
    }
    async fn dead_letters(
        &self,
        dlq: &str,
        count: usize,
    ) -> eventbus_core::Result<Vec<DeadLetterEntry>> {
        self.0.dead_letters(dlq, count).await
    }
}
