//! What the conformance suite (`eventbus_core::conformance`, run on every transport) leaves to
//! the memory transport alone: `settle` with follow-up chains, a batch of hostile stream
//! entries, and options refused before a handler starts.
#![allow(missing_docs)] // test types

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::envelope::{Encoded, Metadata};
use eventbus_core::prelude::*;
use eventbus_core::testing::dead_letters;
use eventbus_core::transport::Outgoing;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.orders.OrderCreated")]
pub struct OrderCreated {
    pub n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.payments.PaymentRequested")]
pub struct PaymentRequested {
    pub n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "test.live.Tick")]
pub struct Tick {
    pub n: u32,
}

type Seen = Arc<Mutex<Vec<u32>>>;

fn fast_retries() -> HandlerOptions {
    HandlerOptions::new()
        .backoff(Duration::from_millis(1))
        .backoff_max(Duration::from_millis(5))
}

async fn record<E: Event<Reply = ()> + Clone>(
    bus: &Bus,
    opts: HandlerOptions,
    f: fn(&E) -> u32,
) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |ev: E| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(f(&ev));
            }
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

/// `testing::settle` is exact on the memory transport: it also waits for the follow-ups that
/// handlers publish, and for their handlers.
#[tokio::test]
async fn settle_waits_for_chains_of_follow_up_events() {
    let bus = Bus::memory();
    bus.subscribe(|ev: OrderCreated, ctx: Context| async move {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        ctx.publish(&PaymentRequested { n: ev.n }).await?;
        Ok::<_, HandlerError>(())
    })
    .await
    .unwrap();
    let paid = record::<PaymentRequested>(&bus, HandlerOptions::new(), |e| e.n).await;
    bus.publish(&OrderCreated { n: 5 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(sorted(&paid), vec![5]);
    assert_eq!(
        eventbus_core::testing::published::<PaymentRequested>(&bus).await,
        vec![PaymentRequested { n: 5 }]
    );
    let env = &eventbus_core::testing::published_envelopes::<PaymentRequested>(&bus).await[0];
    assert_eq!(env.event_type(), "test.payments.PaymentRequested");
}

#[test]
fn an_invalid_namespace_is_refused() {
    let err = Bus::builder()
        .namespace("bad namespace")
        .build()
        .unwrap_err();
    assert!(matches!(err, eventbus_core::Error::Channel { .. }), "{err}");
}

#[tokio::test]
async fn hostile_payloads_are_dead_lettered_with_a_reason_and_consuming_goes_on() {
    let bus = Bus::builder()
        .configure(|c| c.max_payload_bytes = 64 * 1024)
        .build()
        .unwrap();
    let seen = record::<OrderCreated>(&bus, fast_retries(), |e| e.n).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let hostile: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00, 0x80],  // random bytes
        b"{\"n\":\xff}".to_vec(),      // invalid UTF-8
        b"{\"n\":\"seven\"}".to_vec(), // wrong shape
        b"{\"n\":1".to_vec(),          // truncated
        deep.into_bytes(),             // deeply nested
        vec![b' '; 100 * 1024],        // over the size limit
    ];
    // Stream entries as a foreign producer could write them: a valid envelope, hostile `data`.
    for payload in &hostile {
        let entry = Encoded::from_data(
            Metadata::new("hostile", "", "test.orders.OrderCreated"),
            payload,
        );
        bus.transport()
            .publish(Outgoing {
                channel: bus.channel_of::<OrderCreated>(),
                durability: Durability::Durable,
                max_len: None,
                message: entry,
            })
            .await
            .unwrap();
    }
    bus.publish(&OrderCreated { n: 42 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(
        sorted(&seen),
        vec![42],
        "the good event after them was handled"
    );
    let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
    assert_eq!(
        dead.len(),
        hostile.len(),
        "every hostile entry dead-lettered"
    );
    for letter in &dead {
        assert_eq!(letter.deliveries, 1, "never retried: {}", letter.reason);
        assert!(letter.event.is_err(), "{}", letter.reason);
    }
    assert!(
        dead.iter()
            .any(|d| d.reason.contains("exceeds the limit of 65536 bytes")),
        "the size limit is enforced on receive"
    );
    assert_eq!(bus.stats().undecodable, hostile.len() as u64);
}

#[tokio::test]
async fn broadcast_on_an_ephemeral_event_is_refused_before_it_starts() {
    let bus = Bus::memory();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let err = bus
        .subscribe_with(
            move |_: Tick| {
                c.fetch_add(1, Ordering::SeqCst);
                async {}
            },
            HandlerOptions::new().broadcast(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, eventbus_core::Error::InvalidOptions { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`broadcast` needs a durable event") && text.contains("test.live.Tick"),
        "{text}"
    );
    assert_eq!(
        bus.publish(&Tick { n: 1 }).await.unwrap().receivers,
        Some(0)
    );
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
