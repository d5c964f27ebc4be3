//! Delivery rules of the bus on the in-memory transport: fan-out, groups, competing consumers,
//! retries, dead letters, panics, overflow, concurrency, broadcast, claiming, settle.
#![allow(missing_docs)] // test types

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{WAIT, wait_until};
use eventbus_core::envelope::{Encoded, Metadata};
use eventbus_core::prelude::*;
use eventbus_core::testing::dead_letters;
use eventbus_core::transport::{ConsumerSpec, Outgoing, StartFrom};
use eventbus_core::{ConsumeMode, MemoryTransport, PatternMessage};
use tokio::sync::Notify;

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

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, channel = "test.tenant.{tenant}.presence")]
pub struct Presence {
    pub tenant: String,
    pub user: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.payments.PaymentRequested")]
pub struct PaymentRequested {
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

#[tokio::test]
async fn ephemeral_events_fan_out_to_every_subscriber_across_buses() {
    let shared = MemoryTransport::new();
    let a = Bus::builder().transport(shared.clone()).build().unwrap();
    let b = Bus::builder().transport(shared.clone()).build().unwrap();
    let seen_a = record::<Tick>(&a, HandlerOptions::new(), |t| t.n).await;
    let seen_b = record::<Tick>(&b, HandlerOptions::new(), |t| t.n).await;
    for n in 0..10 {
        let receipt = a.publish(&Tick { n }).await.unwrap();
        assert_eq!(receipt.receivers, Some(2));
    }
    eventbus_core::testing::settle(&a).await;
    assert_eq!(sorted(&seen_a), (0..10).collect::<Vec<_>>());
    assert_eq!(sorted(&seen_b), (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn ephemeral_event_without_subscriber_reaches_nobody() {
    let bus = Bus::memory();
    let receipt = bus.publish(&Tick { n: 1 }).await.unwrap();
    assert_eq!(receipt.receivers, Some(0));
    assert_eq!(receipt.stream_id, None);
}

#[tokio::test]
async fn templated_channel_is_filled_and_matched_by_its_pattern() {
    let bus = Bus::memory();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    bus.subscribe(move |p: Presence, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock()
                .unwrap()
                .push(format!("{}:{}", ctx.channel(), p.user));
        }
    })
    .await
    .unwrap();
    let r = bus
        .publish(&Presence {
            tenant: "acme".into(),
            user: 7,
        })
        .await
        .unwrap();
    assert_eq!(r.channel, "test.tenant.acme.presence");
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(*seen.lock().unwrap(), vec!["test.tenant.acme.presence:7"]);

    let bad = bus
        .publish(&Presence {
            tenant: "a b".into(),
            user: 1,
        })
        .await;
    assert!(
        matches!(bad, Err(eventbus_core::Error::Channel { .. })),
        "{bad:?}"
    );
}

#[tokio::test]
async fn pattern_subscription_gets_every_matching_channel_with_its_name() {
    let bus = Bus::memory();
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let s = seen.clone();
    bus.subscribe_pattern("test.tenant.*.presence", move |msg: PatternMessage| {
        let s = s.clone();
        async move {
            let p: Presence = msg.json()?;
            s.lock()
                .unwrap()
                .insert(format!("{} {}", msg.channel(), p.user));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    for (tenant, user) in [("acme", 1), ("globex", 2)] {
        bus.publish(&Presence {
            tenant: tenant.into(),
            user,
        })
        .await
        .unwrap();
    }
    bus.publish(&Tick { n: 0 }).await.unwrap(); // another channel, not matched
    eventbus_core::testing::settle(&bus).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![
            "test.tenant.acme.presence 1",
            "test.tenant.globex.presence 2"
        ]
    );
}

#[tokio::test]
async fn every_group_gets_every_durable_event() {
    let bus = Bus::memory();
    let billing =
        record::<OrderCreated>(&bus, HandlerOptions::new().group("billing"), |e| e.n).await;
    let shipping =
        record::<OrderCreated>(&bus, HandlerOptions::new().group("shipping"), |e| e.n).await;
    for n in 0..20 {
        let r = bus.publish(&OrderCreated { n }).await.unwrap();
        assert!(r.stream_id.is_some());
    }
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(sorted(&billing), (0..20).collect::<Vec<_>>());
    assert_eq!(sorted(&shipping), (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn instances_in_one_group_compete_and_each_event_is_handled_once() {
    let shared = MemoryTransport::new();
    let handled: Arc<Mutex<Vec<(usize, u32)>>> = Arc::default();
    let per_instance = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut buses = Vec::new();
    for instance in 0..2 {
        let bus = Bus::builder().transport(shared.clone()).build().unwrap();
        let (h, counts) = (handled.clone(), per_instance.clone());
        bus.subscribe_with(
            move |ev: OrderCreated| {
                let (h, counts) = (h.clone(), counts.clone());
                async move {
                    counts[instance].fetch_add(1, Ordering::SeqCst);
                    // Hold the first event until the other instance handled one too, so the test
                    // proves both compete instead of depending on scheduling.
                    let other = &counts[1 - instance];
                    let waited = tokio::time::timeout(WAIT, async {
                        while other.load(Ordering::SeqCst) == 0 {
                            tokio::task::yield_now().await;
                        }
                    })
                    .await;
                    assert!(waited.is_ok(), "the other instance never got an event");
                    h.lock().unwrap().push((instance, ev.n));
                }
            },
            HandlerOptions::new().group("workers"),
        )
        .await
        .unwrap();
        buses.push(bus);
    }
    for n in 0..30 {
        buses[0].publish(&OrderCreated { n }).await.unwrap();
    }
    eventbus_core::testing::settle(&buses[0]).await;
    let handled = handled.lock().unwrap().clone();
    let mut ns: Vec<u32> = handled.iter().map(|(_, n)| *n).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..30).collect::<Vec<_>>(), "each event exactly once");
    assert!(handled.iter().any(|(i, _)| *i == 0) && handled.iter().any(|(i, _)| *i == 1));
}

#[tokio::test]
async fn a_failing_handler_is_retried_until_it_succeeds() {
    let bus = Bus::memory();
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let a = attempts.clone();
    bus.subscribe_with(
        move |_: OrderCreated, ctx: Context| {
            let a = a.clone();
            async move {
                a.lock().unwrap().push(ctx.attempt());
                if ctx.attempt() < 3 {
                    return Err(HandlerError::new("not yet"));
                }
                Ok(())
            }
        },
        fast_retries(),
    )
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    let stats = bus.stats();
    assert_eq!((stats.failed, stats.retried, stats.handled), (2, 2, 1));
    assert!(dead_letters::<OrderCreated>(&bus).await.unwrap().is_empty());
}

#[tokio::test]
async fn poison_message_goes_to_dlq_after_max_deliveries_with_the_reason() {
    let bus = Bus::memory();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe_with(
        move |ev: OrderCreated| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(format!("cannot charge order {}", ev.n))
            }
        },
        fast_retries().max_deliveries(4).group("billing"),
    )
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 9 }).await.unwrap();
    bus.publish(&OrderCreated { n: 10 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].reason, "cannot charge order 9");
    assert_eq!(dead[0].deliveries, 4);
    assert_eq!(dead[0].event.as_ref().unwrap(), &OrderCreated { n: 9 });
    assert_eq!(bus.stats().dead_lettered, 2);
    let pending = bus
        .transport()
        .dead_letters(&bus.dead_letter_key_of::<OrderCreated>(), 10)
        .await
        .unwrap();
    assert_eq!(pending[0].letter.group, "billing");
    assert!(pending[0].letter.entry_id.is_some());
}

#[tokio::test]
async fn permanent_errors_skip_the_retries() {
    let bus = Bus::memory();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe_with(
        move |_: OrderCreated| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::permanent("invalid order"))
            }
        },
        fast_retries(),
    )
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        dead_letters::<OrderCreated>(&bus).await.unwrap()[0].reason,
        "invalid order"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_delivery_not_a_dead_process() {
    let bus = Bus::memory();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe_with(
        move |ev: OrderCreated| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if ev.n == 0 {
                    panic!("boom on {}", ev.n);
                }
            }
        },
        fast_retries().max_deliveries(2),
    )
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 0 }).await.unwrap();
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two tries of 0, then 1 still handled"
    );
    let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "handler panicked: boom on 0");
    assert_eq!(bus.stats().handled, 1);
}

#[tokio::test]
async fn undecodable_payload_is_dead_lettered_at_once_without_blocking_the_next() {
    let bus = Bus::memory();
    let seen = record::<OrderCreated>(&bus, fast_retries(), |e| e.n).await;
    // A stream entry whose `data` is JSON of the wrong shape, as a foreign producer might write.
    let garbage = Encoded::from_data(
        Metadata {
            id: "bad-1".into(),
            source: "elsewhere".into(),
            event_type: "test.orders.OrderCreated".into(),
            ..Metadata::default()
        },
        b"{\"n\":\"not a number\"}",
    );
    bus.transport()
        .publish(Outgoing {
            channel: bus.channel_of::<OrderCreated>(),
            durability: Durability::Durable,
            max_len: None,
            message: garbage,
        })
        .await
        .unwrap();
    bus.publish(&OrderCreated { n: 2 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(sorted(&seen), vec![2]);
    let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].deliveries, 1);
    assert!(
        dead[0].reason.contains("invalid type"),
        "{}",
        dead[0].reason
    );
    assert_eq!(bus.stats().undecodable, 1);
}

#[tokio::test]
async fn a_slow_ephemeral_subscriber_drops_the_oldest_and_counts_them() {
    let bus = Bus::builder()
        .configure(|c| c.subscriber_capacity = 4)
        .build()
        .unwrap();
    let gate = Arc::new(Notify::new());
    let seen: Seen = Arc::default();
    let (g, s) = (gate.clone(), seen.clone());
    bus.subscribe(move |t: Tick| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            if t.n == 0 {
                g.notified().await; // stall on the first message
            }
            s.lock().unwrap().push(t.n);
        }
    })
    .await
    .unwrap();
    bus.publish(&Tick { n: 0 }).await.unwrap();
    wait_until("the handler to take message 0", WAIT, || {
        bus.transport().activity().map(|a| a.get()) == Some(1) && bus.stats().delivered == 1
    })
    .await;
    for n in 1..=10 {
        bus.publish(&Tick { n }).await.unwrap();
    }
    gate.notify_one();
    eventbus_core::testing::settle(&bus).await;
    // Message 0 was in the handler; of 1..=10 only the newest 4 fit in the buffer.
    assert_eq!(*seen.lock().unwrap(), vec![0, 7, 8, 9, 10]);
    assert_eq!(bus.stats().dropped, 6);
}

#[tokio::test]
async fn concurrency_caps_the_calls_in_flight() {
    let bus = Bus::memory();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (now.clone(), peak.clone());
    bus.subscribe_with(
        move |_: OrderCreated| {
            let (n, p) = (n.clone(), p.clone());
            async move {
                let current = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(current, Ordering::SeqCst);
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                n.fetch_sub(1, Ordering::SeqCst);
            }
        },
        HandlerOptions::new().concurrency(3),
    )
    .await
    .unwrap();
    for i in 0..30 {
        bus.publish(&OrderCreated { n: i }).await.unwrap();
    }
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert_eq!(bus.stats().handled, 30);
}

#[tokio::test]
async fn broadcast_handlers_see_every_event_on_every_instance() {
    let shared = MemoryTransport::new();
    let a = Bus::builder().transport(shared.clone()).build().unwrap();
    let b = Bus::builder().transport(shared.clone()).build().unwrap();
    let opts = HandlerOptions::new().group("cache").broadcast();
    let seen_a = record::<OrderCreated>(&a, opts, |e| e.n).await;
    let seen_b = record::<OrderCreated>(&b, opts, |e| e.n).await;
    for n in 0..5 {
        a.publish(&OrderCreated { n }).await.unwrap();
    }
    eventbus_core::testing::settle(&a).await;
    assert_eq!(sorted(&seen_a), vec![0, 1, 2, 3, 4]);
    assert_eq!(sorted(&seen_b), vec![0, 1, 2, 3, 4]);
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

#[tokio::test]
async fn an_entry_is_acked_only_after_its_handler_succeeded() {
    let shared = MemoryTransport::new();
    let bus = Bus::builder().transport(shared.clone()).build().unwrap();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    bus.subscribe_with(
        move |_: OrderCreated| {
            let g = g.clone();
            async move { g.notified().await }
        },
        HandlerOptions::new().group("g"),
    )
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    let stream = bus.channel_of::<OrderCreated>();
    wait_until("the entry to be pending", WAIT, || {
        shared.pending(&stream, "g").len() == 1
    })
    .await;
    assert_eq!(bus.stats().handled, 0);
    gate.notify_one();
    eventbus_core::testing::settle(&bus).await;
    assert!(shared.pending(&stream, "g").is_empty());
}

#[tokio::test]
async fn entries_of_a_dead_consumer_are_claimed_by_a_live_one() {
    let shared = MemoryTransport::new();
    let bus = Bus::builder()
        .transport(shared.clone())
        .configure(|c| c.claim_idle = Duration::from_millis(50))
        .build()
        .unwrap();
    let stream = bus.channel_of::<OrderCreated>();
    // A consumer that takes two entries and dies without acking them.
    let dead = bus
        .transport()
        .consume(ConsumerSpec {
            stream: stream.clone(),
            group: "g".into(),
            consumer: "crashed-instance".into(),
            mode: ConsumeMode::Group,
            start: StartFrom::Beginning,
            claim_idle: Duration::from_secs(60),
            stats: bus.stats_handle(),
        })
        .await
        .unwrap();
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    bus.publish(&OrderCreated { n: 2 }).await.unwrap();
    let taken = dead.fetch(2).await.unwrap();
    assert_eq!(taken.len(), 2);
    drop((taken, dead));

    let attempts: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
    let a = attempts.clone();
    bus.subscribe_with(
        move |ev: OrderCreated, ctx: Context| {
            let a = a.clone();
            async move { a.lock().unwrap().push((ev.n, ctx.attempt())) }
        },
        HandlerOptions::new().group("g"),
    )
    .await
    .unwrap();
    eventbus_core::testing::settle(&bus).await;
    let mut attempts = attempts.lock().unwrap().clone();
    attempts.sort_unstable();
    assert_eq!(
        attempts,
        vec![(1, 2), (2, 2)],
        "claimed, second delivery each"
    );
    assert!(shared.pending(&stream, "g").is_empty());
}

#[tokio::test]
async fn events_published_before_a_group_existed_are_handled() {
    let bus = Bus::memory();
    for n in 0..3 {
        bus.publish(&OrderCreated { n }).await.unwrap();
    }
    let seen = record::<OrderCreated>(&bus, HandlerOptions::new(), |e| e.n).await;
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(sorted(&seen), vec![0, 1, 2]);
}

#[tokio::test]
async fn settle_waits_for_chains_of_follow_up_events_and_correlation_is_carried() {
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
    let receipt = bus.publish(&OrderCreated { n: 5 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(sorted(&paid), vec![5]);
    assert_eq!(
        eventbus_core::testing::published::<PaymentRequested>(&bus).await,
        vec![PaymentRequested { n: 5 }]
    );
    let env = &eventbus_core::testing::published_envelopes::<PaymentRequested>(&bus).await[0];
    assert_eq!(
        env.correlation_id.as_deref(),
        Some(receipt.event_id.as_str())
    );
    assert_eq!(env.causation_id.as_deref(), Some(receipt.event_id.as_str()));
    assert_eq!(env.event_type, "test.payments.PaymentRequested");
}

#[tokio::test]
async fn publish_all_publishes_a_batch_in_order() {
    let bus = Bus::memory();
    let seen = record::<OrderCreated>(&bus, HandlerOptions::new(), |e| e.n).await;
    let batch: Vec<OrderCreated> = (0..50).map(|n| OrderCreated { n }).collect();
    let receipts = bus.publish_all(&batch).await.unwrap();
    assert_eq!(receipts.len(), 50);
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(
        *seen.lock().unwrap(),
        (0..50).collect::<Vec<_>>(),
        "in order with concurrency 1"
    );
}

#[tokio::test]
async fn namespaces_isolate_buses_on_one_transport() {
    let shared = MemoryTransport::new();
    let staging = Bus::builder()
        .transport(shared.clone())
        .namespace("staging")
        .build()
        .unwrap();
    let prod = Bus::builder()
        .transport(shared.clone())
        .namespace("prod")
        .build()
        .unwrap();
    let seen = record::<Tick>(&prod, HandlerOptions::new(), |t| t.n).await;
    let r = staging.publish(&Tick { n: 1 }).await.unwrap();
    assert_eq!(r.channel, "staging.test.live.Tick");
    assert_eq!(r.receivers, Some(0));
    prod.publish(&Tick { n: 2 }).await.unwrap();
    eventbus_core::testing::settle(&prod).await;
    assert_eq!(sorted(&seen), vec![2]);
    assert!(Bus::builder().namespace("bad namespace").build().is_err());
}

#[tokio::test]
async fn oversized_payloads_are_refused_on_publish() {
    let bus = Bus::builder()
        .configure(|c| c.max_payload_bytes = 64)
        .build()
        .unwrap();
    let err = bus
        .publish(&Presence {
            tenant: "acme".into(),
            user: 1,
        })
        .await
        .map(|_| ());
    assert!(err.is_ok());
    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(name = "test.Big")]
    struct Big {
        blob: String,
    }
    let err = bus
        .publish(&Big {
            blob: "x".repeat(100),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, eventbus_core::Error::PayloadTooLarge { limit: 64, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_calls_and_refuses_new_publishes() {
    let bus = Bus::memory();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    bus.subscribe(move |_: OrderCreated| {
        let d = d.clone();
        async move {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            d.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    wait_until("the handler to start", WAIT, || bus.stats().delivered == 1).await;
    bus.shutdown().await;
    assert_eq!(done.load(Ordering::SeqCst), 1, "in-flight call finished");
    assert!(matches!(
        bus.publish(&OrderCreated { n: 2 }).await,
        Err(eventbus_core::Error::Closed)
    ));
}

#[tokio::test]
async fn handlers_finishing_during_shutdown_can_still_publish() {
    let bus = Bus::memory();
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    bus.subscribe(move |ev: OrderCreated, ctx: Context| {
        let g = g.clone();
        async move {
            g.notified().await;
            ctx.publish(&PaymentRequested { n: ev.n }).await?;
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 3 }).await.unwrap();
    wait_until("the handler to start", WAIT, || bus.stats().delivered == 1).await;
    let shutdown = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    gate.notify_one();
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert_eq!(
        eventbus_core::testing::published::<PaymentRequested>(&bus).await,
        vec![PaymentRequested { n: 3 }]
    );
    assert_eq!(bus.stats().handled, 1);
    assert!(dead_letters::<OrderCreated>(&bus).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_panic_before_the_first_await_of_a_handler_is_a_failed_delivery() {
    let bus = Bus::memory();
    bus.subscribe_with(
        |ev: OrderCreated| {
            if ev.n == 0 {
                panic!("panicked while building the future");
            }
            async move {}
        },
        fast_retries().max_deliveries(2),
    )
    .await
    .unwrap();
    bus.publish(&OrderCreated { n: 0 }).await.unwrap();
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    eventbus_core::testing::settle(&bus).await;
    let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .reason
            .contains("panicked while building the future"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        bus.stats().handled,
        1,
        "the dispatcher survived and handled the next event"
    );
}

#[tokio::test]
async fn an_entry_delivered_more_than_max_deliveries_is_dead_lettered_without_calling_the_handler()
{
    let shared = MemoryTransport::new();
    let bus = Bus::builder()
        .transport(shared.clone())
        .configure(|c| c.claim_idle = Duration::from_millis(20))
        .build()
        .unwrap();
    let stream = bus.channel_of::<OrderCreated>();
    let spec = |consumer: &str| ConsumerSpec {
        stream: stream.clone(),
        group: "g".into(),
        consumer: consumer.into(),
        mode: ConsumeMode::Group,
        start: StartFrom::Beginning,
        claim_idle: Duration::from_secs(60),
        stats: bus.stats_handle(),
    };
    bus.publish(&OrderCreated { n: 1 }).await.unwrap();
    // Two consumers that each take the entry and crash (as a poison message would make them).
    for _ in 0..2 {
        let crashed = bus.transport().consume(spec("crashing")).await.unwrap();
        assert_eq!(crashed.fetch(1).await.unwrap().len(), 1);
    }
    assert_eq!(shared.pending(&stream, "g")[0].delivery_count, 2);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe_with(
        move |_: OrderCreated| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        },
        HandlerOptions::new().group("g").max_deliveries(2),
    )
    .await
    .unwrap();
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("more than max_deliveries (2)"),
        "{}",
        dead[0].reason
    );
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
            Metadata {
                id: "hostile".into(),
                event_type: "test.orders.OrderCreated".into(),
                ..Metadata::default()
            },
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
