//! Dead-letter replay and the `dedup` guard: a replayed dead letter goes back where it came from
//! with its event id, so the groups that handled it and keep `dedup` marks skip it; a `dedup`
//! group skips an event id it handled already and runs again what failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Backend;
use super::events::{Order, Tick};
use super::support::{FAST, Recorder, Setup, dead_letters, eventually};
use crate::engine::PublishOptions;
use crate::envelope::{EVENT_FIELD, Encoded, Metadata};
use crate::error::Error;
use crate::handler::HandlerOptions;
use crate::{Bus, Context, HandlerError};

const DAY: Duration = HandlerOptions::DEFAULT_DEDUP_TTL;

/// Subscribes a handler of [`Order`] that fails permanently while `broken` is set and records
/// `(n, event id)` of each successful call.
async fn fragile(bus: &Bus, options: HandlerOptions) -> (Arc<AtomicBool>, Recorder<(u32, String)>) {
    let broken = Arc::new(AtomicBool::new(true));
    let seen = Recorder::default();
    let (b, s) = (broken.clone(), seen.clone());
    bus.subscribe_with(
        move |o: Order, ctx: Context| {
            let (b, s) = (b.clone(), s.clone());
            async move {
                if b.load(Ordering::SeqCst) {
                    return Err(HandlerError::permanent("database down"));
                }
                s.push((o.n, ctx.id().to_owned()));
                Ok(())
            }
        },
        options,
    )
    .await
    .expect("subscribe");
    (broken, seen)
}

/// The fields of a stream entry holding `Order { n }` with event id `id`, as eventbus writes it.
fn order_entry(id: &str, n: u32) -> Vec<u8> {
    let meta = Metadata::new(id, "elsewhere", "conformance.orders.Order");
    Encoded::new(meta, &Order { n })
        .expect("an order serializes")
        .to_json()
        .to_vec()
}

/// A stream dead letter is replayed to its stream: handled again, under its original event id,
/// and gone from the dead-letter stream.
pub async fn a_replayed_dead_letter_is_handled_again_under_its_event_id(backend: &dyn Backend) {
    let setup = Setup::new(backend, "replay");
    let bus = setup.bus().await;
    let (broken, seen) = fragile(&bus, FAST.group("billing")).await;
    let published = bus.publish(&Order { n: 5 }).await.expect("publish");
    dead_letters::<Order>(&bus, 1).await;
    broken.store(false, Ordering::SeqCst);
    let dlq = bus.dead_letter_key_of::<Order>();
    let letter = &bus.transport().dead_letters(&dlq, 10).await.expect("list")[0];
    let receipt = bus
        .transport()
        .replay_dead_letter(&dlq, &letter.id)
        .await
        .expect("replay");
    assert_eq!(
        receipt.event_id, published.event_id,
        "it keeps its event id"
    );
    assert_eq!(receipt.channel, bus.channel_of::<Order>());
    assert!(receipt.stream_id.is_some() && receipt.stream_id != published.stream_id);
    setup.drained(&bus.channel_of::<Order>(), 1).await;
    assert_eq!(seen.items(), vec![(5, published.event_id)]);
    assert!(dead_letters::<Order>(&bus, 0).await.is_empty());
}

/// A pub/sub dead letter is published again on its channel, with its event id.
pub async fn an_ephemeral_dead_letter_is_replayed_on_its_channel(backend: &dyn Backend) {
    let setup = Setup::new(backend, "replay_pubsub");
    let bus = setup.bus().await;
    let broken = Arc::new(AtomicBool::new(true));
    let seen = Recorder::default();
    let (b, s) = (broken.clone(), seen.clone());
    bus.subscribe_with(
        move |t: Tick, ctx: Context| {
            let (b, s) = (b.clone(), s.clone());
            async move {
                if b.load(Ordering::SeqCst) {
                    return Err(HandlerError::permanent("renderer down"));
                }
                s.push((t.n, ctx.id().to_owned()));
                Ok(())
            }
        },
        FAST,
    )
    .await
    .expect("subscribe");
    let published = bus.publish(&Tick { n: 3 }).await.expect("publish");
    dead_letters::<Tick>(&bus, 1).await;
    broken.store(false, Ordering::SeqCst);
    let dlq = bus.dead_letter_key_of::<Tick>();
    let letter = &bus.transport().dead_letters(&dlq, 10).await.expect("list")[0];
    assert_eq!(letter.letter.channel, bus.channel_of::<Tick>());
    let receipt = bus
        .transport()
        .replay_dead_letter(&dlq, &letter.id)
        .await
        .expect("replay");
    assert_eq!(
        (receipt.receivers, receipt.stream_id.as_ref()),
        (Some(1), None)
    );
    assert_eq!(receipt.event_id, published.event_id);
    eventually("the replayed tick", || seen.len() >= 1).await;
    assert_eq!(seen.items(), vec![(3, published.event_id)]);
    assert!(dead_letters::<Tick>(&bus, 0).await.is_empty());
}

/// A bare stream entry (no envelope, so no event id) is named by its entry id; replayed, it is a
/// new entry, and the receipt and its handler name it by the new entry's id.
pub async fn a_replayed_bare_stream_entry_is_named_by_its_new_entry(backend: &dyn Backend) {
    let setup = Setup::new(backend, "replay_bare");
    let bus = setup.bus().await;
    let (broken, seen) = fragile(&bus, FAST).await;
    let stream = bus.channel_of::<Order>();
    setup.add_entry(&stream, &[("data", br#"{"n":6}"#)]).await;
    dead_letters::<Order>(&bus, 1).await;
    broken.store(false, Ordering::SeqCst);
    let dlq = bus.dead_letter_key_of::<Order>();
    let letter = &bus.transport().dead_letters(&dlq, 10).await.expect("list")[0];
    let receipt = bus
        .transport()
        .replay_dead_letter(&dlq, &letter.id)
        .await
        .expect("replay");
    let new_entry = receipt.stream_id.clone().expect("replayed to the stream");
    assert_eq!(receipt.event_id, new_entry);
    setup.drained(&stream, 1).await;
    assert_eq!(seen.items(), vec![(6, new_entry)]);
}

/// A dead letter is gone once replayed: replaying it again fails with
/// [`Error::NoSuchDeadLetter`].
pub async fn a_dead_letter_is_replayed_once(backend: &dyn Backend) {
    let setup = Setup::new(backend, "replay_once");
    let bus = setup.bus().await;
    let (broken, _seen) = fragile(&bus, FAST).await;
    bus.publish(&Order { n: 1 }).await.expect("publish");
    dead_letters::<Order>(&bus, 1).await;
    broken.store(false, Ordering::SeqCst);
    let dlq = bus.dead_letter_key_of::<Order>();
    let id = bus.transport().dead_letters(&dlq, 10).await.expect("list")[0]
        .id
        .clone();
    bus.transport()
        .replay_dead_letter(&dlq, &id)
        .await
        .expect("replay");
    let again = bus.transport().replay_dead_letter(&dlq, &id).await;
    assert!(
        matches!(&again, Err(Error::NoSuchDeadLetter { dlq: d, id: i }) if *d == dlq && *i == id),
        "{again:?}"
    );
}

/// A `dedup` group handles an event id once: the same event published again under its id
/// (`PublishOptions::event_id`, the retry of a publish whose outcome was unknown) is acked
/// without a call and counted; a group without `dedup` handles it twice. An empty id is refused.
pub async fn a_dedup_group_skips_an_event_published_again_under_its_id(backend: &dyn Backend) {
    let setup = Setup::new(backend, "dedup");
    let bus = setup.bus().await;
    let guarded = Recorder::default();
    let plain = Recorder::default();
    for (seen, options) in [
        (guarded.clone(), FAST.group("billing").dedup(DAY)),
        (plain.clone(), FAST.group("audit")),
    ] {
        bus.subscribe_with(
            move |o: Order| {
                let seen = seen.clone();
                async move { seen.push(o.n) }
            },
            options,
        )
        .await
        .expect("subscribe");
    }
    for _ in 0..2 {
        let receipt = bus
            .publish_with(&Order { n: 1 }, PublishOptions::default().event_id("ev-1"))
            .await
            .expect("publish under a given id");
        assert_eq!(receipt.event_id, "ev-1");
    }
    bus.publish(&Order { n: 2 }).await.expect("publish");
    let empty = bus
        .publish_with(&Order { n: 3 }, PublishOptions::default().event_id(""))
        .await;
    assert!(
        matches!(empty, Err(Error::InvalidEventId { .. })),
        "{empty:?}"
    );
    setup.drained(&bus.channel_of::<Order>(), 2).await;
    assert_eq!(guarded.items(), vec![1, 2]);
    assert_eq!(plain.items(), vec![1, 1, 2], "without dedup: at least once");
    assert_eq!(bus.stats().duplicates_skipped, 1);
}

/// A `dedup` group marks an event id only after a successful call: an event whose call failed
/// runs again when it is delivered again.
pub async fn a_dedup_group_runs_again_what_failed(backend: &dyn Backend) {
    let setup = Setup::new(backend, "dedup_failed");
    let bus = setup.bus().await;
    let (broken, seen) = fragile(&bus, FAST.group("billing").dedup(DAY)).await;
    let stream = bus.channel_of::<Order>();
    let entry = order_entry("ev-9", 9);
    setup.add_entry(&stream, &[(EVENT_FIELD, &entry)]).await;
    dead_letters::<Order>(&bus, 1).await;
    broken.store(false, Ordering::SeqCst);
    setup.add_entry(&stream, &[(EVENT_FIELD, &entry)]).await;
    setup.drained(&stream, 1).await;
    assert_eq!(seen.items(), vec![(9, "ev-9".to_owned())]);
    assert_eq!(bus.stats().duplicates_skipped, 0);
}

/// A replayed dead letter keeps its event id: the `dedup` group that gave up on it handles it
/// now, the one that handled it already skips it.
pub async fn a_replayed_dead_letter_is_skipped_by_the_dedup_groups_that_handled_it(
    backend: &dyn Backend,
) {
    let setup = Setup::new(backend, "replay_dedup");
    let bus = setup.bus().await;
    let billing = Recorder::default();
    let b = billing.clone();
    bus.subscribe_with(
        move |o: Order| {
            let b = b.clone();
            async move { b.push(o.n) }
        },
        FAST.group("billing").dedup(DAY),
    )
    .await
    .expect("subscribe");
    let (broken, audit) = fragile(&bus, FAST.group("audit").dedup(DAY)).await;
    bus.publish(&Order { n: 3 }).await.expect("publish");
    dead_letters::<Order>(&bus, 1).await;
    let stream = bus.channel_of::<Order>();
    setup.drained(&stream, 2).await;
    broken.store(false, Ordering::SeqCst);
    let dlq = bus.dead_letter_key_of::<Order>();
    let id = bus.transport().dead_letters(&dlq, 10).await.expect("list")[0]
        .id
        .clone();
    bus.transport()
        .replay_dead_letter(&dlq, &id)
        .await
        .expect("replay");
    setup.drained(&stream, 2).await;
    assert_eq!(billing.items(), vec![3], "billing handled it already");
    assert_eq!(audit.len(), 1, "audit gave up on it and handles it now");
    assert_eq!(bus.stats().duplicates_skipped, 1);
}
