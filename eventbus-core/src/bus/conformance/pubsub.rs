//! Ephemeral events (pub/sub): every live subscriber gets each message, at most once; nothing is
//! kept; patterns and templated channels; a slow subscriber loses its oldest messages, within
//! its limits, and counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

use super::Backend;
use super::events::{Frame, Presence, Tick};
use super::support::{Recorder, Setup, eventually};
use crate::error::Error;
use crate::handler::HandlerOptions;
use crate::pattern::PatternMessage;
use crate::{Bus, Context, HandlerError};

/// Subscribes a handler of [`Tick`] that records each `n`.
async fn record_ticks(bus: &Bus) -> Recorder<u32> {
    let seen = Recorder::default();
    let s = seen.clone();
    bus.subscribe(move |t: Tick| {
        let s = s.clone();
        async move { s.push(t.n) }
    })
    .await
    .expect("subscribe");
    seen
}

/// Every subscriber of every instance gets every message, in order; the receipt counts one
/// receiver per subscribed instance (as `PUBLISH` counts connections), however many handlers
/// it runs.
pub async fn an_ephemeral_event_reaches_every_subscriber_of_every_instance(backend: &dyn Backend) {
    let setup = Setup::new(backend, "fan_out");
    let (a, b, publisher) = (setup.bus().await, setup.bus().await, setup.bus().await);
    let seen = [
        record_ticks(&a).await,
        record_ticks(&a).await,
        record_ticks(&b).await,
    ];
    for n in 0..5 {
        let receipt = publisher.publish(&Tick { n }).await.expect("publish");
        assert_eq!(receipt.receivers, Some(2), "two instances subscribe");
        assert_eq!(receipt.stream_id, None);
    }
    eventually("every subscriber to get 5 ticks", || {
        seen.iter().all(|s| s.len() >= 5)
    })
    .await;
    for s in &seen {
        assert_eq!(s.items(), vec![0, 1, 2, 3, 4]);
    }
}

/// A message published while nobody subscribes reaches nobody and is not kept for a later
/// subscriber (at most once, to the subscribers of that moment).
pub async fn an_ephemeral_event_is_not_kept_for_subscribers_that_are_not_there(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "not_kept");
    let bus = setup.bus().await;
    let receipt = bus.publish(&Tick { n: 0 }).await.expect("publish");
    assert_eq!((receipt.receivers, receipt.stream_id), (Some(0), None));
    let seen = record_ticks(&bus).await;
    bus.publish(&Tick { n: 1 }).await.expect("publish");
    eventually("the tick published after subscribing", || seen.len() >= 1).await;
    assert_eq!(seen.items(), vec![1], "the earlier tick was not kept");
}

/// `subscribe_pattern` gets the messages of every channel its glob matches, each with its
/// concrete channel, and none of other channels.
pub async fn a_pattern_subscription_gets_every_matching_channel_with_its_name(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "pattern");
    let bus = setup.bus().await;
    let seen: Recorder<(String, u32)> = Recorder::default();
    let s = seen.clone();
    bus.subscribe_pattern(
        "conformance.tenant.*.presence",
        move |msg: PatternMessage| {
            let s = s.clone();
            async move {
                let p: Presence = msg.json()?;
                s.push((msg.channel().to_owned(), p.user));
                Ok::<_, HandlerError>(())
            }
        },
    )
    .await
    .expect("subscribe_pattern");
    // Not matched; published first, so it would have arrived before the others.
    bus.publish(&Tick { n: 0 }).await.expect("publish");
    for (tenant, user) in [("acme", 1), ("globex", 2)] {
        let p = Presence {
            tenant: tenant.into(),
            user,
        };
        bus.publish(&p).await.expect("publish");
    }
    eventually("both presences", || seen.len() >= 2).await;
    let ns = setup.namespace();
    assert_eq!(
        seen.sorted(),
        vec![
            (format!("{ns}.conformance.tenant.acme.presence"), 1),
            (format!("{ns}.conformance.tenant.globex.presence"), 2),
        ]
    );
}

/// A templated channel is filled from the event's fields and validated; a typed handler of the
/// type gets every channel of it (it subscribes to the pattern), and sees the concrete one.
pub async fn a_templated_channel_is_filled_from_the_event_and_matched_by_its_pattern(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "template");
    let bus = setup.bus().await;
    let seen: Recorder<(String, u32)> = Recorder::default();
    let s = seen.clone();
    bus.subscribe(move |p: Presence, ctx: Context| {
        let s = s.clone();
        async move { s.push((ctx.channel().to_owned(), p.user)) }
    })
    .await
    .expect("subscribe");
    let ns = setup.namespace();
    for (tenant, user) in [("acme", 7), ("globex", 8)] {
        let p = Presence {
            tenant: tenant.into(),
            user,
        };
        let receipt = bus.publish(&p).await.expect("publish");
        assert_eq!(
            receipt.channel,
            format!("{ns}.conformance.tenant.{tenant}.presence")
        );
        assert_eq!(receipt.receivers, Some(1));
    }
    eventually("both presences", || seen.len() >= 2).await;
    assert_eq!(
        seen.items(),
        vec![
            (format!("{ns}.conformance.tenant.acme.presence"), 7),
            (format!("{ns}.conformance.tenant.globex.presence"), 8),
        ]
    );
    let bad = Presence {
        tenant: "a b".into(),
        user: 1,
    };
    let refused = bus.publish(&bad).await;
    assert!(matches!(refused, Err(Error::Channel { .. })), "{refused:?}");
}

/// A subscriber whose handler is stuck keeps `subscriber_capacity` messages: the oldest are
/// dropped, each one counted in `stats().dropped`, and it goes on with the newest.
pub async fn a_slow_subscriber_drops_its_oldest_messages_and_counts_them(backend: &dyn Backend) {
    let setup = Setup::new(backend, "slow_subscriber");
    let bus = setup
        .bus_from(setup.builder().configure(|c| c.subscriber_capacity = 4))
        .await;
    let gate = Arc::new(Semaphore::new(0));
    let stuck = Arc::new(AtomicBool::new(false));
    let seen = Recorder::default();
    let (g, st, s) = (gate.clone(), stuck.clone(), seen.clone());
    bus.subscribe(move |t: Tick| {
        let (g, st, s) = (g.clone(), st.clone(), s.clone());
        async move {
            if t.n == 0 {
                st.store(true, Ordering::SeqCst);
                let _permit = g.acquire().await;
            }
            s.push(t.n);
        }
    })
    .await
    .expect("subscribe");
    bus.publish(&Tick { n: 0 }).await.expect("publish");
    eventually("the handler to hold message 0", || {
        stuck.load(Ordering::SeqCst)
    })
    .await;
    for n in 1..=10 {
        bus.publish(&Tick { n }).await.expect("publish");
    }
    eventually("6 messages to be dropped", || bus.stats().dropped >= 6).await;
    gate.add_permits(1);
    eventually("the buffered messages to be handled", || seen.len() >= 5).await;
    // 0 was in the handler; of 1..=10 only the newest 4 fit in the buffer.
    assert_eq!(seen.items(), vec![0, 7, 8, 9, 10]);
    assert_eq!(bus.stats().dropped, 6);
}

/// `subscriber_capacity_bytes` bounds a stuck subscriber's buffer too: large messages are
/// dropped, oldest first, so that what is kept stays within the limit.
pub async fn a_slow_subscriber_buffers_no_more_than_its_byte_limit(backend: &dyn Backend) {
    // Each frame is between 1,500 and 2,000 bytes on the wire: two fit in 4,000, three do not.
    const LIMIT: usize = 4_000;
    let setup = Setup::new(backend, "byte_limit");
    let bus = setup
        .bus_from(
            setup
                .builder()
                .configure(|c| c.subscriber_capacity_bytes = LIMIT),
        )
        .await;
    let gate = Arc::new(Semaphore::new(0));
    let stuck = Arc::new(AtomicBool::new(false));
    let seen = Recorder::default();
    let (g, st, s) = (gate.clone(), stuck.clone(), seen.clone());
    bus.subscribe(move |f: Frame| {
        let (g, st, s) = (g.clone(), st.clone(), s.clone());
        async move {
            if f.n == 0 {
                st.store(true, Ordering::SeqCst);
                let _permit = g.acquire().await;
            }
            s.push(f.n);
        }
    })
    .await
    .expect("subscribe");
    let frame = |n| Frame {
        n,
        pixels: "x".repeat(1_500),
    };
    bus.publish(&frame(0)).await.expect("publish");
    eventually("the handler to hold frame 0", || {
        stuck.load(Ordering::SeqCst)
    })
    .await;
    for n in 1..=10 {
        bus.publish(&frame(n)).await.expect("publish");
    }
    eventually("8 frames to be dropped", || bus.stats().dropped >= 8).await;
    gate.add_permits(1);
    eventually("the buffered frames to be handled", || seen.len() >= 3).await;
    assert_eq!(seen.items(), vec![0, 9, 10]);
    assert_eq!(bus.stats().dropped, 8);
}

/// A JSON document without an envelope, as another producer publishes it, is taken as the
/// payload; the handler sees the event's name and an id the bus gave it.
pub async fn a_bare_json_payload_on_a_channel_is_accepted(backend: &dyn Backend) {
    let setup = Setup::new(backend, "bare_pubsub");
    let bus = setup.bus().await;
    let seen: Recorder<(u32, String, String)> = Recorder::default();
    let s = seen.clone();
    bus.subscribe_with(
        move |t: Tick, ctx: Context| {
            let s = s.clone();
            async move {
                let meta = ctx.metadata();
                s.push((t.n, meta.id().to_owned(), meta.event_type().to_owned()));
            }
        },
        HandlerOptions::new(),
    )
    .await
    .expect("subscribe");
    let receivers = setup
        .publish_raw(&bus.channel_of::<Tick>(), br#"{"n":7}"#)
        .await;
    assert_eq!(receivers, 1);
    eventually("the bare payload to be handled", || seen.len() >= 1).await;
    let (n, id, event_type) = seen.items().remove(0);
    assert_eq!((n, event_type.as_str()), (7, "conformance.live.Tick"));
    assert!(!id.is_empty(), "the bus names a bare payload");
}
