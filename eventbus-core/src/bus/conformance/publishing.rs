//! What a handler learns of its event, what it publishes in turn, batches, namespaces, and the
//! shutdown that lets handlers finish (within `shutdown_timeout`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::Backend;
use super::events::{FollowUp, Order, Tick};
use super::support::{FAST, PATIENCE, Recorder, Setup, eventually};
use crate::engine::PublishOptions;
use crate::envelope::Metadata;
use crate::error::Error;
use crate::{Context, HandlerError};

/// What a handler saw of its context.
#[derive(Clone)]
struct Seen {
    meta: Metadata,
    channel: String,
    entry_id: Option<String>,
    attempt: u32,
    tenant: Option<String>,
}

/// The handler's [`Context`] carries the event's attributes as published: id, type, source,
/// version, correlation id, headers, the concrete channel, the stream entry and the attempt.
pub async fn the_context_carries_the_attributes_of_the_event(backend: &dyn Backend) {
    let setup = Setup::new(backend, "context");
    let bus = setup.bus().await;
    let seen: Recorder<Seen> = Recorder::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |_: Order, ctx: Context| {
            let s = s.clone();
            async move {
                s.push(Seen {
                    meta: ctx.metadata().clone(),
                    channel: ctx.channel().to_owned(),
                    entry_id: ctx.entry_id().map(str::to_owned),
                    attempt: ctx.attempt(),
                    tenant: ctx.header("tenant").map(str::to_owned),
                })
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    let options = PublishOptions::default()
        .header("tenant", "acme")
        .correlation_id("conversation-1");
    let receipt = bus
        .publish_with(&Order { n: 1 }, options)
        .await
        .expect("publish");
    eventually("the handler call", || seen.len() >= 1).await;
    let Seen {
        meta,
        channel,
        entry_id,
        attempt,
        tenant,
    } = seen.items().remove(0);
    assert_eq!(meta.id(), receipt.event_id);
    assert_eq!(meta.event_type(), "conformance.orders.Order");
    assert_eq!(meta.source(), "conformance");
    assert_eq!(meta.data_version(), Some(1));
    assert!(meta.time().is_some());
    assert_eq!(meta.correlation_id(), Some("conversation-1"));
    assert_eq!(channel, bus.channel_of::<Order>());
    assert_eq!(entry_id, receipt.stream_id);
    assert_eq!((attempt, tenant.as_deref()), (1, Some("acme")));
}

/// An event published by a handler with `ctx.publish` belongs to the conversation of the event
/// it handles (`correlationid`) and names that event as its cause (`causationid`).
pub async fn a_follow_up_carries_the_correlation_and_causation_of_its_cause(backend: &dyn Backend) {
    let setup = Setup::new(backend, "follow_up");
    let bus = setup.bus().await;
    bus.subscribe_with(
        |o: Order, ctx: Context| async move {
            ctx.publish(&FollowUp { n: o.n }).await?;
            Ok::<_, HandlerError>(())
        },
        FAST,
    )
    .await
    .expect("subscribe");
    let seen: Recorder<(u32, Metadata)> = Recorder::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |f: FollowUp, ctx: Context| {
            let s = s.clone();
            async move { s.push((f.n, ctx.metadata().clone())) }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    let cause = bus.publish(&Order { n: 5 }).await.expect("publish");
    eventually("the follow-up", || seen.len() >= 1).await;
    let (n, meta) = seen.items().remove(0);
    assert_eq!(n, 5);
    assert_eq!(meta.correlation_id(), Some(cause.event_id.as_str()));
    assert_eq!(meta.causation_id(), Some(cause.event_id.as_str()));
    assert_eq!(meta.event_type(), "conformance.orders.FollowUp");
}

/// `publish_all` publishes a batch: one receipt per event, each with its entry id, handled in
/// the order of the batch.
pub async fn publish_all_delivers_a_batch_in_order(backend: &dyn Backend) {
    let setup = Setup::new(backend, "publish_all");
    let bus = setup.bus().await;
    let seen = Recorder::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |o: Order| {
            let s = s.clone();
            async move { s.push(o.n) }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    let batch: Vec<Order> = (0..100).map(|n| Order { n }).collect();
    let receipts = bus.publish_all(&batch).await.expect("publish_all");
    assert_eq!(receipts.len(), 100);
    let ids: Vec<&String> = receipts
        .iter()
        .filter_map(|r| r.stream_id.as_ref())
        .collect();
    assert_eq!(ids.len(), 100);
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(seen.items(), (0..100).collect::<Vec<_>>());
}

/// Buses in two namespaces on one backend see nothing of each other: every channel and stream
/// key carries the namespace.
pub async fn namespaces_isolate_buses_on_one_backend(backend: &dyn Backend) {
    let staging = Setup::new(backend, "staging");
    let prod = Setup::new(backend, "prod");
    let (staging_bus, prod_bus) = (staging.bus().await, prod.bus().await);
    let ticks = Recorder::default();
    let orders = Recorder::default();
    let (t, o) = (ticks.clone(), orders.clone());
    prod_bus
        .subscribe(move |tick: Tick| {
            let t = t.clone();
            async move { t.push(tick.n) }
        })
        .await
        .expect("subscribe");
    prod_bus
        .subscribe_with(
            move |order: Order| {
                let o = o.clone();
                async move { o.push(order.n) }
            },
            FAST,
        )
        .await
        .expect("subscribe");
    let receipt = staging_bus.publish(&Tick { n: 1 }).await.expect("publish");
    assert_eq!(
        receipt.channel,
        format!("{}.conformance.live.Tick", staging.namespace())
    );
    assert_eq!(receipt.receivers, Some(0));
    staging_bus.publish(&Order { n: 1 }).await.expect("publish");
    prod_bus.publish(&Tick { n: 2 }).await.expect("publish");
    prod_bus.publish(&Order { n: 2 }).await.expect("publish");
    eventually("prod's own tick", || ticks.len() >= 1).await;
    prod.drained(&prod_bus.channel_of::<Order>(), 1).await;
    assert_eq!((ticks.items(), orders.items()), (vec![2], vec![2]));
    assert!(
        staging
            .groups(&staging_bus.channel_of::<Order>())
            .await
            .is_empty(),
        "no group of prod on staging's stream"
    );
}

/// `shutdown` stops reading, lets the calls in flight finish, acks them, and returns; then the
/// bus refuses to publish.
pub async fn shutdown_lets_in_flight_calls_finish_and_acks_them(backend: &dyn Backend) {
    let setup = Setup::new(backend, "shutdown");
    let bus = setup.bus().await;
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (g, s, f) = (gate.clone(), started.clone(), finished.clone());
    bus.subscribe_with(
        move |_: Order| {
            let (g, s, f) = (g.clone(), s.clone(), f.clone());
            async move {
                s.store(true, Ordering::SeqCst);
                let _permit = g.acquire().await;
                f.store(true, Ordering::SeqCst);
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    eventually("the handler to start", || started.load(Ordering::SeqCst)).await;
    let stopping = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    gate.add_permits(1);
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown returns once the call finished")
        .expect("shutdown does not panic");
    assert!(
        finished.load(Ordering::SeqCst),
        "the call in flight finished"
    );
    assert_eq!(bus.stats().handled, 1);
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    let refused = bus.publish(&Order { n: 2 }).await;
    assert!(matches!(refused, Err(Error::Closed)), "{refused:?}");
}

/// A handler still running when `shutdown` is called can publish its follow-ups.
pub async fn a_handler_finishing_during_shutdown_can_still_publish(backend: &dyn Backend) {
    let setup = Setup::new(backend, "publish_in_shutdown");
    let bus = setup.bus().await;
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let published: Recorder<bool> = Recorder::default();
    let (g, s, p) = (gate.clone(), started.clone(), published.clone());
    bus.subscribe_with(
        move |o: Order, ctx: Context| {
            let (g, s, p) = (g.clone(), s.clone(), p.clone());
            async move {
                s.store(true, Ordering::SeqCst);
                let _permit = g.acquire().await;
                p.push(ctx.publish(&FollowUp { n: o.n }).await.is_ok());
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 3 }).await.expect("publish");
    eventually("the handler to start", || started.load(Ordering::SeqCst)).await;
    let stopping = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    gate.add_permits(1);
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown returns")
        .expect("shutdown does not panic");
    assert_eq!(published.items(), vec![true]);
    let follow_ups = setup.bus().await;
    let seen = Recorder::default();
    let s = seen.clone();
    follow_ups
        .subscribe_with(
            move |f: FollowUp| {
                let s = s.clone();
                async move { s.push(f.n) }
            },
            FAST,
        )
        .await
        .expect("subscribe");
    follow_ups
        .publish(&FollowUp { n: 4 })
        .await
        .expect("publish");
    setup.drained(&follow_ups.channel_of::<FollowUp>(), 1).await;
    assert_eq!(seen.items(), vec![3, 4], "the follow-up is in the stream");
}

/// A call still running after `shutdown_timeout` is abandoned: `shutdown` returns, the entry
/// stays pending under the consumer's name, and the next instance of that name handles it
/// first (at once, not after `claim_idle`). A call that finished meanwhile was acked.
pub async fn a_call_running_past_shutdown_timeout_is_abandoned_to_the_next_instance(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "shutdown_timeout");
    let instance = |limit: Duration| {
        setup.builder().instance("stuck").configure(move |c| {
            c.shutdown_timeout = limit;
            c.claim_idle = Duration::from_secs(600);
        })
    };
    let limit = Duration::from_millis(300);
    let bus = setup.bus_from(instance(limit)).await;
    let started: Recorder<u32> = Recorder::default();
    // Holds the call of 8 until the shutdown began: it finishes during the wait for 7.
    let gate = Arc::new(Semaphore::new(0));
    let (s, g) = (started.clone(), gate.clone());
    bus.subscribe_with(
        move |o: Order| {
            let (s, g) = (s.clone(), g.clone());
            async move {
                s.push(o.n);
                if o.n == 7 {
                    std::future::pending::<()>().await;
                }
                let _permit = g.acquire().await;
            }
        },
        FAST.group("workers").concurrency(2),
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 7 }).await.expect("publish");
    bus.publish(&Order { n: 8 }).await.expect("publish");
    eventually("both calls to start", || started.len() == 2).await;
    let began = Instant::now();
    let stopping = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    eventually("the shutdown to begin", || {
        bus.shutdown_token().is_cancelled()
    })
    .await;
    gate.add_permits(1);
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown returns after shutdown_timeout")
        .expect("shutdown does not panic");
    let took = began.elapsed();
    assert!(
        took >= limit,
        "shutdown gave up after {took:?}, before {limit:?}"
    );

    let attempts: Recorder<(u32, u32)> = Recorder::default();
    let a = attempts.clone();
    let next = setup.bus_from(instance(PATIENCE)).await;
    next.subscribe_with(
        move |o: Order, ctx: Context| {
            let a = a.clone();
            async move { a.push((o.n, ctx.attempt())) }
        },
        FAST.group("workers"),
    )
    .await
    .expect("subscribe");
    assert_eq!(next.consumer_name(), Some("stuck"), "the name was released");
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(
        attempts.items(),
        vec![(7, 2)],
        "only the abandoned entry, again"
    );
}

/// A graceful shutdown takes the bus's consumer out of its group once it owns nothing, so a
/// group lists the live instances only; a consumer that keeps an entry pending (its call was
/// abandoned) stays, for the next instance of its name.
pub async fn a_stopped_consumer_leaves_its_group_unless_it_owns_pending_entries(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "leave");
    let instance = |name: &'static str| {
        setup.builder().instance(name).configure(|c| {
            c.shutdown_timeout = Duration::from_millis(200);
        })
    };
    let first = setup.bus_from(instance("first")).await;
    let second = setup.bus_from(instance("second")).await;
    let seen: Recorder<u32> = Recorder::default();
    for bus in [&first, &second] {
        let s = seen.clone();
        bus.subscribe_with(
            move |o: Order| {
                let s = s.clone();
                async move {
                    s.push(o.n);
                    if o.n == 2 {
                        // Never finishes: abandoned at shutdown, its entry stays pending.
                        std::future::pending::<()>().await;
                    }
                }
            },
            FAST.group("workers"),
        )
        .await
        .expect("subscribe");
    }
    let stream = first.channel_of::<Order>();
    let members = async || setup.groups(&stream).await[0].consumers;
    assert_eq!(members().await, 2, "{:?}", setup.groups(&stream).await);
    first.publish(&Order { n: 1 }).await.expect("publish");
    first.publish(&Order { n: 2 }).await.expect("publish");
    eventually("both calls", || seen.len() == 2).await;
    // Whichever instance holds the hung call keeps its entry pending and stays.
    first.shutdown().await;
    second.shutdown().await;
    let groups = setup.groups(&stream).await;
    assert_eq!(groups[0].pending, 1, "{groups:?}");
    assert_eq!(
        groups[0].consumers, 1,
        "only the owner of the abandoned entry stays: {groups:?}"
    );
}
