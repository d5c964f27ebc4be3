//! Failed deliveries: an error or a panic is retried with backoff, then dead-lettered with the
//! reason after `max_deliveries`; a permanent error skips the retries; what cannot be decoded or
//! is too large is dead-lettered at once; an entry redelivered too often (its consumers crashed
//! on it) is dead-lettered before the handler runs again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Backend;
use super::events::{Blob, Order, Tick};
use super::support::{FAST, Recorder, Setup, dead_letters, eventually, fetch};
use crate::error::Error;
use crate::transport::{ConsumeMode, ConsumerSpec, StartFrom};
use crate::{Context, HandlerError};

/// A handler that fails twice and then succeeds is called three times, with the attempt in its
/// context; nothing is dead-lettered and the entry is acked.
pub async fn a_failed_delivery_is_retried_until_it_succeeds(backend: &dyn Backend) {
    let setup = Setup::new(backend, "retry");
    let bus = setup.bus().await;
    let attempts = Recorder::default();
    let a = attempts.clone();
    bus.subscribe_with(
        move |_: Order, ctx: Context| {
            let a = a.clone();
            async move {
                a.push(ctx.attempt());
                if ctx.attempt() < 3 {
                    return Err(HandlerError::new("payment service unavailable"));
                }
                Ok(())
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(attempts.items(), vec![1, 2, 3]);
    let stats = bus.stats();
    assert_eq!((stats.failed, stats.retried, stats.handled), (2, 2, 1));
    assert!(dead_letters::<Order>(&bus, 0).await.is_empty());
}

/// A handler that keeps failing is called `max_deliveries` times; then the entry goes to the
/// dead-letter stream with the last error, the group, the handler and the attempts, and is
/// acked. The events after it are handled.
pub async fn a_poison_message_is_dead_lettered_after_max_deliveries_with_the_reason(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "poison");
    let bus = setup.bus().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe_with(
        move |o: Order| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                if o.n == 9 {
                    return Err(HandlerError::new(format!("cannot charge order {}", o.n)));
                }
                Ok(())
            }
        },
        FAST.group("billing").max_deliveries(3),
    )
    .await
    .expect("subscribe");
    let poison = bus.publish(&Order { n: 9 }).await.expect("publish");
    bus.publish(&Order { n: 10 }).await.expect("publish");
    let dead = dead_letters::<Order>(&bus, 1).await;
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "three tries of 9, one of 10"
    );
    assert_eq!(dead[0].reason, "cannot charge order 9");
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(dead[0].event.as_ref().ok(), Some(&Order { n: 9 }));
    assert!(!dead[0].handler.is_empty());
    let raw = bus
        .transport()
        .dead_letters(&bus.dead_letter_key_of::<Order>(), 10)
        .await
        .expect("dead letters");
    assert_eq!(raw[0].letter.group, "billing");
    assert_eq!(raw[0].letter.channel, bus.channel_of::<Order>());
    assert_eq!(raw[0].letter.entry_id, poison.stream_id);
    let stats = bus.stats();
    assert_eq!((stats.dead_lettered, stats.handled), (1, 1));
}

/// `HandlerError::permanent` goes to the dead-letter stream after one call.
pub async fn a_permanent_error_skips_the_retries(backend: &dyn Backend) {
    let setup = Setup::new(backend, "permanent");
    let bus = setup.bus().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe_with(
        move |_: Order| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::permanent("invalid order"))
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    let dead = dead_letters::<Order>(&bus, 1).await;
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].deliveries),
        ("invalid order", 1)
    );
}

/// A panic in a handler is a failed delivery like an error (retried, then dead-lettered with
/// the panic message); the dispatcher goes on with the next event.
pub async fn a_panicking_handler_is_a_failed_delivery_and_the_next_event_is_handled(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "panic");
    let bus = setup.bus().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    bus.subscribe_with(
        move |o: Order| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                if o.n == 0 {
                    panic!("boom on {}", o.n);
                }
            }
        },
        FAST.max_deliveries(2),
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 0 }).await.expect("publish");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    let dead = dead_letters::<Order>(&bus, 1).await;
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(dead[0].reason, "handler panicked: boom on 0");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two tries of 0, then 1");
    assert_eq!(bus.stats().handled, 1);
}

/// A handler that panics while its future is built, before any await, fails the delivery the
/// same way.
pub async fn a_panic_before_the_first_await_is_a_failed_delivery(backend: &dyn Backend) {
    let setup = Setup::new(backend, "early_panic");
    let bus = setup.bus().await;
    bus.subscribe_with(
        |o: Order| {
            if o.n == 0 {
                panic!("panicked while building the future");
            }
            async move {}
        },
        FAST.max_deliveries(2),
    )
    .await
    .expect("subscribe");
    bus.publish(&Order { n: 0 }).await.expect("publish");
    bus.publish(&Order { n: 1 }).await.expect("publish");
    let dead = dead_letters::<Order>(&bus, 1).await;
    setup.drained(&bus.channel_of::<Order>(), 1).await;
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
        "the dispatcher handled the next event"
    );
}

/// An entry whose payload does not decode into the handler's type is dead-lettered at once,
/// with the decoder's reason, never retried; the next entry is handled.
pub async fn an_undecodable_payload_is_dead_lettered_at_once(backend: &dyn Backend) {
    let setup = Setup::new(backend, "undecodable");
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
    let stream = bus.channel_of::<Order>();
    setup
        .add_entry(&stream, &[("data", br#"{"n":"seven"}"#)])
        .await;
    bus.publish(&Order { n: 2 }).await.expect("publish");
    let dead = dead_letters::<Order>(&bus, 1).await;
    setup.drained(&stream, 1).await;
    assert_eq!(seen.items(), vec![2]);
    assert_eq!(dead[0].deliveries, 1);
    assert!(dead[0].event.is_err());
    assert!(
        dead[0].reason.contains("invalid type"),
        "{}",
        dead[0].reason
    );
    assert_eq!(bus.stats().undecodable, 1);
}

/// An entry delivered more often than `max_deliveries` without an ack (the consumers that took
/// it crashed) is dead-lettered without calling the handler again.
pub async fn an_entry_delivered_more_than_max_deliveries_is_dead_lettered_without_a_call(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "crash_loop");
    let bus = setup.bus().await;
    let stream = bus.channel_of::<Order>();
    bus.publish(&Order { n: 1 }).await.expect("publish");
    // Twice a consumer of that name takes the entry and crashes.
    for _ in 0..2 {
        let crashing = bus
            .transport()
            .consume(ConsumerSpec {
                stream: stream.clone(),
                group: "workers".into(),
                consumer: "crashing".into(),
                mode: ConsumeMode::Group,
                start: StartFrom::Beginning,
                claim_idle: std::time::Duration::from_secs(600),
                stats: bus.stats_handle(),
            })
            .await
            .expect("consume");
        drop(fetch(&*crashing, 1).await);
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let survivor = setup.bus().await;
    survivor
        .subscribe_with(
            move |_: Order| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            },
            FAST.group("workers").max_deliveries(2),
        )
        .await
        .expect("subscribe");
    let dead = dead_letters::<Order>(&bus, 1).await;
    setup.drained(&stream, 1).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(
        dead[0].reason.contains("more than max_deliveries (2)"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].deliveries, 3);
}

/// Ephemeral events follow the same rules: a failing handler is retried, then its message goes
/// to the dead-letter stream of the type with the payload and the reason.
pub async fn an_ephemeral_handler_failure_is_retried_then_dead_lettered(backend: &dyn Backend) {
    let setup = Setup::new(backend, "pubsub_failure");
    let bus = setup.bus().await;
    let attempts = Recorder::default();
    let a = attempts.clone();
    bus.subscribe_with(
        move |_: Tick, ctx: Context| {
            let a = a.clone();
            async move {
                a.push(ctx.attempt());
                Err::<(), _>(HandlerError::new("renderer down"))
            }
        },
        FAST.max_deliveries(2),
    )
    .await
    .expect("subscribe");
    bus.publish(&Tick { n: 5 }).await.expect("publish");
    let dead = dead_letters::<Tick>(&bus, 1).await;
    assert_eq!(attempts.items(), vec![1, 2]);
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].deliveries),
        ("renderer down", 2)
    );
    assert_eq!(dead[0].event.as_ref().ok(), Some(&Tick { n: 5 }));
    eventually("the dead letter to be counted", || {
        bus.stats().dead_lettered == 1
    })
    .await;
}

/// `max_payload_bytes` is enforced on publish (an error) and on receive (a message from a
/// producer with a larger limit is dead-lettered with the reason, never handed to the handler).
pub async fn an_oversized_payload_is_refused_on_publish_and_dead_lettered_on_receive(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "payload_limit");
    let strict = setup
        .bus_from(setup.builder().configure(|c| c.max_payload_bytes = 1024))
        .await;
    let big = Blob {
        blob: "x".repeat(2_000),
    };
    match strict.publish(&big).await {
        Err(Error::PayloadTooLarge { limit, size, .. }) => {
            assert_eq!(limit, 1024);
            assert!(size > 2_000, "{size}");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    strict
        .subscribe_with(
            move |_: Blob| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            },
            FAST,
        )
        .await
        .expect("subscribe");
    let lenient = setup.bus().await;
    lenient
        .publish(&big)
        .await
        .expect("publish within the default limit");
    let dead = dead_letters::<Blob>(&strict, 1).await;
    setup.drained(&strict.channel_of::<Blob>(), 1).await;
    assert!(
        dead[0].reason.contains("exceeds the limit of 1024 bytes"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].deliveries, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
