//! Durable events (streams and consumer groups): every group gets every event, the instances of
//! a group compete for them, a broadcast handler sees all of them on every instance; calls in
//! flight are bounded and in order at concurrency 1; an entry is acked only once handled; the
//! entries of a dead consumer are claimed (soon after `claim_idle`), those of a slow handler are not; entries written by
//! other producers are accepted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::Backend;
use super::events::Order;
use super::support::{CLAIM_IDLE, FAST, PATIENCE, Recorder, Setup, eventually, fetch};
use crate::handler::HandlerOptions;
use crate::transport::{ConsumeMode, ConsumerSpec, StartFrom};
use crate::{Bus, Context};

/// Subscribes a handler of [`Order`] with `options` that records each `n`.
async fn record_orders(bus: &Bus, options: HandlerOptions) -> Recorder<u32> {
    let seen = Recorder::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |o: Order| {
            let s = s.clone();
            async move { s.push(o.n) }
        },
        options,
    )
    .await
    .expect("subscribe");
    seen
}

/// A group consumer named `consumer` that is not a handler: a test's hands on the stream.
fn consumer_spec(bus: &Bus, group: &str, consumer: &str) -> ConsumerSpec {
    ConsumerSpec {
        stream: bus.channel_of::<Order>(),
        group: group.into(),
        consumer: consumer.into(),
        mode: ConsumeMode::Group,
        start: StartFrom::Beginning,
        claim_idle: Duration::from_secs(600),
        stats: bus.stats_handle(),
    }
}

/// A new group starts at the beginning of the stream: events published before any handler of
/// it ran are handled (the default `start_from`).
pub async fn events_published_before_a_group_existed_are_handled(backend: &dyn Backend) {
    let setup = Setup::new(backend, "before_group");
    let bus = setup.bus().await;
    for n in 0..3 {
        let receipt = bus.publish(&Order { n }).await.expect("publish");
        assert!(
            receipt.stream_id.is_some(),
            "a durable receipt has its entry id"
        );
        assert_eq!(receipt.receivers, None);
    }
    let seen = record_orders(&bus, FAST.group("late")).await;
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(seen.items(), vec![0, 1, 2]);
}

/// With `start_from = Now` a new group handles only what is published after it was created.
pub async fn a_new_group_can_start_from_now(backend: &dyn Backend) {
    let setup = Setup::new(backend, "start_now");
    let bus = setup
        .bus_from(setup.builder().configure(|c| c.start_from = StartFrom::Now))
        .await;
    bus.publish(&Order { n: 1 }).await.expect("publish");
    let seen = record_orders(&bus, FAST.group("live")).await;
    bus.publish(&Order { n: 2 }).await.expect("publish");
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(seen.items(), vec![2]);
}

/// Each consumer group handles every event of the stream.
pub async fn every_group_gets_every_durable_event(backend: &dyn Backend) {
    let setup = Setup::new(backend, "every_group");
    let bus = setup.bus().await;
    let billing = record_orders(&bus, FAST.group("billing")).await;
    let shipping = record_orders(&bus, FAST.group("shipping")).await;
    for n in 0..10 {
        bus.publish(&Order { n }).await.expect("publish");
    }
    setup.drained(&bus.channel_of::<Order>(), 2).await;
    assert_eq!(billing.items(), (0..10).collect::<Vec<_>>());
    assert_eq!(shipping.items(), (0..10).collect::<Vec<_>>());
}

/// The instances of one group compete: each entry is handled by one of them, once, and both get
/// a share.
pub async fn instances_of_one_group_share_the_work_and_each_entry_is_handled_once(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "compete");
    let handled: Recorder<(usize, u32)> = Recorder::default();
    let started = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut instances = Vec::new();
    for instance in 0..2 {
        let bus = setup.bus().await;
        let (h, started) = (handled.clone(), started.clone());
        bus.subscribe_with(
            move |o: Order| {
                let (h, started) = (h.clone(), started.clone());
                async move {
                    started[instance].fetch_add(1, Ordering::SeqCst);
                    // Each instance holds its first event until the other one got an event
                    // too: both must compete, whatever the scheduling.
                    let other = &started[1 - instance];
                    let deadline = tokio::time::Instant::now() + PATIENCE;
                    while other.load(Ordering::SeqCst) == 0
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    h.push((instance, o.n));
                }
            },
            FAST.group("workers").concurrency(4),
        )
        .await
        .expect("subscribe");
        instances.push(bus);
    }
    let publisher = setup.bus().await;
    let orders: Vec<Order> = (0..30).map(|n| Order { n }).collect();
    publisher.publish_all(&orders).await.expect("publish_all");
    setup.drained(&publisher.channel_of::<Order>(), 1).await;
    let items = handled.items();
    let distinct: BTreeSet<u32> = items.iter().map(|(_, n)| *n).collect();
    assert_eq!(items.len(), 30, "each entry handled once: {items:?}");
    assert_eq!(distinct, (0..30).collect(), "{items:?}");
    for instance in 0..2 {
        assert!(
            items.iter().any(|(i, _)| *i == instance),
            "instance {instance} got nothing: {items:?}"
        );
    }
}

/// A broadcast handler runs on every instance for every event published after it started.
pub async fn a_broadcast_handler_sees_every_later_event_on_every_instance(backend: &dyn Backend) {
    let setup = Setup::new(backend, "broadcast");
    let publisher = setup.bus().await;
    publisher.publish(&Order { n: 0 }).await.expect("publish");
    let mut seen = Vec::new();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let bus = setup.bus().await;
        seen.push(record_orders(&bus, FAST.broadcast()).await);
        instances.push(bus);
    }
    for n in 1..=5 {
        publisher.publish(&Order { n }).await.expect("publish");
    }
    eventually("both instances to see 5 events", || {
        seen.iter().all(|s| s.len() >= 5)
    })
    .await;
    for s in &seen {
        assert_eq!(
            s.items(),
            vec![1, 2, 3, 4, 5],
            "not the one published before"
        );
    }
}

/// `concurrency = N` runs at most N calls at once, and N when there is work for them.
pub async fn concurrency_bounds_the_calls_in_flight(backend: &dyn Backend) {
    let setup = Setup::new(backend, "concurrency");
    let bus = setup.bus().await;
    let gate = Arc::new(Semaphore::new(0));
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (g, c, p) = (gate.clone(), now.clone(), peak.clone());
    bus.subscribe_with(
        move |_: Order| {
            let (g, c, p) = (g.clone(), c.clone(), p.clone());
            async move {
                p.fetch_max(c.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                if let Ok(permit) = g.acquire().await {
                    permit.forget();
                }
                c.fetch_sub(1, Ordering::SeqCst);
            }
        },
        FAST.concurrency(3),
    )
    .await
    .expect("subscribe");
    let orders: Vec<Order> = (0..12).map(|n| Order { n }).collect();
    bus.publish_all(&orders).await.expect("publish_all");
    eventually("3 calls in flight", || now.load(Ordering::SeqCst) == 3).await;
    gate.add_permits(12);
    eventually("12 handled", || bus.stats().handled == 12).await;
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

/// At the default concurrency of 1, entries are handled one at a time, in stream order.
pub async fn concurrency_one_handles_entries_in_order(backend: &dyn Backend) {
    let setup = Setup::new(backend, "in_order");
    let bus = setup.bus().await;
    let orders: Vec<Order> = (0..50).map(|n| Order { n }).collect();
    bus.publish_all(&orders).await.expect("publish_all");
    let seen = record_orders(&bus, FAST).await;
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(seen.items(), (0..50).collect::<Vec<_>>());
}

/// An entry stays pending in its group while its handler runs, and is acked once it returned.
pub async fn an_entry_is_acked_only_after_its_handler_succeeded(backend: &dyn Backend) {
    let setup = Setup::new(backend, "ack_after");
    let bus = setup.bus().await;
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let (g, s) = (gate.clone(), started.clone());
    bus.subscribe_with(
        move |_: Order| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                s.store(true, Ordering::SeqCst);
                let _permit = g.acquire().await;
            }
        },
        FAST.group("billing"),
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    let stream = bus.channel_of::<Order>();
    eventually("the handler to start", || started.load(Ordering::SeqCst)).await;
    let groups = setup.groups(&stream).await;
    assert_eq!(groups.len(), 1);
    assert_eq!((groups[0].name.as_str(), groups[0].pending), ("billing", 1));
    assert_eq!(bus.stats().handled, 0);
    gate.add_permits(1);
    setup.drained(&stream, 1).await;
    assert_eq!(bus.stats().handled, 1);
}

/// Entries a consumer took and never acked (it died) are claimed by a live instance of the
/// group once idle for `claim_idle`, and handled with the delivery count the backend kept.
pub async fn entries_of_a_dead_consumer_are_claimed_after_claim_idle(backend: &dyn Backend) {
    let setup = Setup::new(backend, "claim");
    let bus = setup.bus().await;
    let dead = bus
        .transport()
        .consume(consumer_spec(&bus, "workers", "crashed"))
        .await
        .expect("consume");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    bus.publish(&Order { n: 2 }).await.expect("publish");
    drop(fetch(&*dead, 2).await);
    drop(dead); // dies holding both

    let attempts: Recorder<(u32, u32)> = Recorder::default();
    let a = attempts.clone();
    let survivor = setup.bus().await;
    survivor
        .subscribe_with(
            move |o: Order, ctx: Context| {
                let a = a.clone();
                async move { a.push((o.n, ctx.attempt())) }
            },
            FAST.group("workers"),
        )
        .await
        .expect("subscribe");
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(
        attempts.sorted(),
        vec![(1, 2), (2, 2)],
        "claimed: the second delivery of each"
    );
}

/// Live consumers look for claimable entries every tenth of `claim_idle`: the entry of a dead
/// consumer is claimed between `claim_idle` and about `claim_idle + claim_idle / 10` after it
/// was read, wherever the survivor's scans fall (here it starts half a period later).
pub async fn a_dead_consumers_entry_is_claimed_soon_after_claim_idle(backend: &dyn Backend) {
    let claim_idle = Duration::from_secs(1);
    let setup = Setup::new(backend, "claim_due");
    let builder = || setup.builder().configure(|c| c.claim_idle = claim_idle);
    let bus = setup.bus_from(builder()).await;
    let dead = bus
        .transport()
        .consume(consumer_spec(&bus, "workers", "crashed"))
        .await
        .expect("consume");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    let got = fetch(&*dead, 1).await;
    let read_at = std::time::Instant::now();
    drop((got, dead));
    // Not a wait for delivery: it puts the survivor's claim scans out of step with the moment
    // the entry becomes claimable, where a scan every half `claim_idle` would be half late.
    tokio::time::sleep(claim_idle / 2).await;

    let claimed: Recorder<std::time::Instant> = Recorder::default();
    let c = claimed.clone();
    let survivor = setup.bus_from(builder()).await;
    survivor
        .subscribe_with(
            move |_: Order| {
                let c = c.clone();
                async move { c.push(std::time::Instant::now()) }
            },
            FAST.group("workers"),
        )
        .await
        .expect("subscribe");
    eventually("the entry to be claimed", || claimed.len() == 1).await;
    let delay = claimed.items()[0] - read_at;
    // The store counts the idle time from its reply, a moment before `read_at`.
    assert!(
        delay + Duration::from_millis(50) >= claim_idle,
        "claimed {delay:?} after the read, before claim_idle {claim_idle:?}"
    );
    assert!(
        delay < claim_idle.mul_f64(1.3),
        "claimed {delay:?} after the read, claim_idle {claim_idle:?}"
    );
}

/// An instance restarted under its old name (a stable `instance`) gets the entries it had not
/// acked at once, without waiting for `claim_idle`.
pub async fn a_restarted_instance_gets_its_own_pending_entries_at_once(backend: &dyn Backend) {
    let setup = Setup::new(backend, "own_pending");
    let bus = setup.bus().await;
    let before = bus
        .transport()
        .consume(consumer_spec(&bus, "workers", "worker-a"))
        .await
        .expect("consume");
    bus.publish(&Order { n: 3 }).await.expect("publish");
    drop(fetch(&*before, 1).await);
    drop(before);

    let attempts: Recorder<(u32, u32)> = Recorder::default();
    let a = attempts.clone();
    let restarted = setup
        .bus_from(
            setup
                .builder()
                .instance("worker-a")
                .configure(|c| c.claim_idle = Duration::from_secs(600)),
        )
        .await;
    restarted
        .subscribe_with(
            move |o: Order, ctx: Context| {
                let a = a.clone();
                async move { a.push((o.n, ctx.attempt())) }
            },
            FAST.group("workers"),
        )
        .await
        .expect("subscribe");
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(attempts.items(), vec![(3, 2)]);
}

/// An entry whose handler runs longer than `claim_idle` is not claimed by another instance of
/// the group while it is being handled: it is handled once.
pub async fn a_slow_handler_keeps_its_entry_from_other_consumers(backend: &dyn Backend) {
    let setup = Setup::new(backend, "lease");
    let slow = setup.bus().await;
    let gate = Arc::new(Semaphore::new(0));
    let calls: Recorder<&'static str> = Recorder::default();
    let (g, c) = (gate.clone(), calls.clone());
    slow.subscribe_with(
        move |_: Order| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                c.push("slow");
                let _permit = g.acquire().await;
            }
        },
        FAST.group("workers"),
    )
    .await
    .expect("subscribe");
    slow.publish(&Order { n: 1 }).await.expect("publish");
    eventually("the slow handler to start", || calls.len() == 1).await;
    let other = setup.bus().await;
    let c = calls.clone();
    other
        .subscribe_with(
            move |_: Order| {
                let c = c.clone();
                async move { c.push("other") }
            },
            FAST.group("workers"),
        )
        .await
        .expect("subscribe");
    // The handler is slow on purpose: five times `claim_idle`, long enough for the other
    // instance to claim an entry that merely looked idle (Redis scans once a second).
    tokio::time::sleep(CLAIM_IDLE * 5).await;
    gate.add_permits(1);
    setup.drained(&slow.channel_of::<Order>(), 1).await;
    assert_eq!(
        calls.items(),
        vec!["slow"],
        "claimed away while being handled"
    );
    assert_eq!(slow.stats().handled, 1);
}

/// A stream entry with only a `data` field (`XADD <stream> * data <json>` from another producer)
/// is taken as the payload, named by its entry id.
pub async fn a_bare_payload_in_a_stream_entry_is_accepted(backend: &dyn Backend) {
    let setup = Setup::new(backend, "bare_stream");
    let bus = setup.bus().await;
    let seen: Recorder<(u32, String, String)> = Recorder::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |o: Order, ctx: Context| {
            let s = s.clone();
            async move {
                let meta = ctx.metadata();
                s.push((o.n, meta.id().to_owned(), meta.event_type().to_owned()));
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    let stream = bus.channel_of::<Order>();
    let entry = setup.add_entry(&stream, &[("data", br#"{"n":9}"#)]).await;
    setup.drained(&stream, 1).await;
    assert_eq!(
        seen.items(),
        vec![(9, entry, "conformance.orders.Order".to_owned())]
    );
}

/// A stream entry with the CloudEvents attributes as separate fields (binary mode) is accepted,
/// with its attributes.
pub async fn a_binary_mode_stream_entry_is_accepted(backend: &dyn Backend) {
    let setup = Setup::new(backend, "binary_mode");
    let bus = setup.bus().await;
    let seen: Recorder<(u32, String, String)> = Recorder::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |o: Order, ctx: Context| {
            let s = s.clone();
            async move {
                let meta = ctx.metadata();
                s.push((o.n, meta.id().to_owned(), meta.source().to_owned()));
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    let stream = bus.channel_of::<Order>();
    let fields: [(&str, &[u8]); 5] = [
        ("specversion", b"1.0"),
        ("id", b"py-1"),
        ("source", b"checkout"),
        ("type", b"conformance.orders.Order"),
        ("data", br#"{"n":4}"#),
    ];
    setup.add_entry(&stream, &fields).await;
    setup.drained(&stream, 1).await;
    assert_eq!(
        seen.items(),
        vec![(4, "py-1".to_owned(), "checkout".to_owned())]
    );
}
