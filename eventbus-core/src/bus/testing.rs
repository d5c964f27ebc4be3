//! Helpers for tests: wait until the bus is idle, then assert on what was published, what each
//! handler was called with and how the call ended, and what was dead-lettered.
//!
//! The in-memory bus is a test double with the semantics of the Redis one. A unit test
//! publishes, waits with [`settle`] (no sleeps), and asserts on [`published`], [`consumed`] and
//! [`dead_letters`]. Every helper that reads what happened is `async`.
//!
//! ```
//! use eventbus_core::prelude::*;
//! use eventbus_core::testing;
//!
//! #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
//! pub struct OrderCreated { pub order_id: String, pub amount_cents: i64 }
//! #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
//! pub struct PaymentRequested { pub order_id: String }
//!
//! async fn charge(ev: OrderCreated, ctx: Context) -> Result<(), HandlerError> {
//!     if ev.amount_cents < 0 {
//!         return Err(HandlerError::permanent("negative amount"));
//!     }
//!     ctx.publish(&PaymentRequested { order_id: ev.order_id }).await?;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eventbus_core::Result<()> {
//! let bus = Bus::memory();
//! bus.subscribe(charge).await?;
//! bus.publish(&OrderCreated { order_id: "o-1".into(), amount_cents: 100 }).await?;
//! bus.publish(&OrderCreated { order_id: "o-2".into(), amount_cents: -1 }).await?;
//! testing::settle(&bus).await;
//!
//! // What the handler published in turn.
//! assert_eq!(
//!     testing::published::<PaymentRequested>(&bus).await,
//!     vec![PaymentRequested { order_id: "o-1".into() }]
//! );
//! // What the handler was called with, and how each call ended.
//! let calls = testing::consumed::<OrderCreated>(&bus).await;
//! assert_eq!(calls.len(), 2);
//! assert!(calls[0].outcome.is_handled());
//! assert_eq!(calls[1].outcome, testing::Outcome::Failed("negative amount".into()));
//! // What was dead-lettered, with the reason.
//! let dead = testing::dead_letters::<OrderCreated>(&bus).await?;
//! assert_eq!(dead.len(), 1);
//! assert_eq!(dead[0].reason, "negative amount");
//! assert_eq!(dead[0].event.as_ref().unwrap().order_id, "o-2");
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Bus;
use crate::activity::Activity;
use crate::context::Context;
use crate::engine::{CallOutcome, PublishOptions};
use crate::envelope::{self, Metadata};
use crate::error::{DecodeError, Error, Result};
use crate::event::Event;
use crate::handler::{HandlerFailure, registered_handlers};
use crate::topology::{Topology, line_diff};

/// A dead-lettered event, decoded for assertions.
#[derive(Debug)]
pub struct DeadLettered<E> {
    /// Entry id in the dead-letter stream.
    pub id: String,
    /// The event, or why it does not decode.
    pub event: Result<E, DecodeError>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// The handler that gave up.
    pub handler: String,
    /// Deliveries tried.
    pub deliveries: u32,
}

/// The dead letters of event type `E` (its `<stream>.dlq`), oldest first.
pub async fn dead_letters<E: Event>(bus: &Bus) -> Result<Vec<DeadLettered<E>>> {
    let key = bus.dead_letter_key_of::<E>();
    let entries = bus.transport().dead_letters(&key, usize::MAX).await?;
    Ok(entries
        .into_iter()
        .map(|entry| {
            let l = entry.letter;
            let event = envelope::decode(&l.channel, &l.body).and_then(|d| d.payload(&l.channel));
            DeadLettered {
                id: entry.id,
                event,
                reason: l.reason,
                handler: l.handler,
                deliveries: l.deliveries,
            }
        })
        .collect())
}

/// The environment variable that makes [`assert_topology_snapshot`] rewrite the file.
pub const UPDATE_SNAPSHOTS_ENV: &str = "EVENTBUS_UPDATE_SNAPSHOTS";

/// Compares the topology of this binary (every event type and handler linked in) with the
/// snapshot file at `path`, and panics with a readable diff when they differ. With
/// `EVENTBUS_UPDATE_SNAPSHOTS=1` in the environment it rewrites the file instead; a missing file
/// is written and the test fails once, so that the new file gets reviewed and committed.
///
/// ```no_run
/// #[test]
/// fn topology_is_unchanged() {
///     eventbus_core::testing::assert_topology_snapshot(
///         concat!(env!("CARGO_MANIFEST_DIR"), "/topology.snap"),
///     );
/// }
/// ```
#[track_caller]
pub fn assert_topology_snapshot(path: impl AsRef<Path>) {
    let path = path.as_ref();
    let topology = Topology::from_registry();
    if let Err(e) = topology.check_channels() {
        panic!("{e}");
    }
    let actual = topology.render();
    let update = std::env::var(UPDATE_SNAPSHOTS_ENV).is_ok_and(|v| v == "1");
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(_) | Err(_) if update => write(path, &actual),
        Ok(expected) => panic!(
            "the eventbus topology differs from {}:\n{}\nA renamed channel orphans its stream and consumer groups. \
             If the change is intended, run the tests with {UPDATE_SNAPSHOTS_ENV}=1 and commit the file.",
            path.display(),
            line_diff(&expected, &actual)
        ),
        Err(_) => {
            write(path, &actual);
            panic!(
                "no topology snapshot at {}: it was written now, with {} event types and {} \
                 handlers. Review it: every handler of this service must be listed; one that is \
                 missing lives in a crate that is not linked into this binary (add \
                 `use that_crate as _;` next to the other uses, in main.rs and in this test). \
                 Then commit the file: from now on this test fails when a channel, stream or \
                 consumer group would change.",
                path.display(),
                topology.events.len(),
                topology.handlers.len()
            );
        }
    }
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("cannot write the topology snapshot {}: {e}", path.display());
    }
}

/// Waits until nothing is queued or being handled: every published message was handled,
/// dead-lettered or dropped, including what handlers published in turn. No sleeps needed in
/// tests. On Redis it waits for the handler calls running in this process and until every
/// consumer group this bus consumes has nothing unread and nothing pending (`XINFO GROUPS`:
/// lag and pending, whoever holds them). Pub/sub subscribers and broadcast readers of other
/// processes are not covered: nobody can tell what they still have to do.
///
/// # Panics
///
/// After [`BusConfig::settle_timeout`](crate::BusConfig::settle_timeout) (30 s) with work still
/// outstanding: a test that never settles is a failing test. [`try_settle`] returns the error
/// instead.
pub async fn settle(bus: &Bus) {
    if let Err(e) = try_settle(bus, bus.engine.config().settle_timeout).await {
        panic!("{e}");
    }
}

/// [`settle`] with a timeout, failing with [`Error::NotSettled`] instead of panicking.
pub async fn try_settle(bus: &Bus, timeout: Duration) -> Result<()> {
    let engine = &bus.engine;
    let activity = engine.transport().activity();
    let in_flight = engine.in_flight();
    let idle = || activity.as_ref().is_none_or(|a| a.get() == 0) && in_flight.get() == 0;
    let wait = async {
        loop {
            if idle() {
                // Give tasks that were just woken a chance to take the next message.
                tokio::task::yield_now().await;
                if idle() && crate::consumers::backlog_drained(engine).await && idle() {
                    return;
                }
            }
            let transport_idle = async {
                if let Some(a) = &activity {
                    a.idle().await;
                }
            };
            tokio::join!(transport_idle, in_flight.idle());
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| Error::NotSettled {
            timeout,
            queued: activity.as_ref().map_or(0, Activity::get),
            in_flight: in_flight.get(),
            backlog: engine.consumers().last_backlog(),
        })
}

/// Every event of type `E` published through this bus (by `publish`, `publish_all`, handlers'
/// `ctx.publish` and requests), decoded again from what was sent, so a type that does not
/// survive JSON fails here. The bus keeps the last [`RECORD_LIMIT`](crate::RECORD_LIMIT).
///
/// # Panics
///
/// When the bus does not record (recording is on for the memory transport; see
/// [`BusConfig::record`](crate::BusConfig::record)), or an event does not decode back into `E`.
pub async fn published<E: Event>(bus: &Bus) -> Vec<E> {
    sent::<E>(bus)
        .into_iter()
        .map(|(_, data)| decode_recorded::<E>(&data))
        .collect()
}

/// The attributes of every published event of type `E`, in order. Panics like [`published`].
pub async fn published_envelopes<E: Event>(bus: &Bus) -> Vec<Metadata> {
    sent::<E>(bus).into_iter().map(|(meta, _)| meta).collect()
}

/// Forgets what was recorded: published events and handler calls.
pub async fn clear_recorded(bus: &Bus) {
    bus.engine.clear_records();
}

/// One call of a handler, as [`consumed`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Consumed<E> {
    /// The handler (its path for `#[handler]`s, its type name for closures).
    pub handler: String,
    /// The event it was called with.
    pub event: E,
    /// The attributes of the message.
    pub metadata: Metadata,
    /// The delivery attempt, 1 for the first.
    pub attempt: u32,
    /// How the call ended.
    pub outcome: Outcome,
}

/// How a handler call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned `Ok`.
    Handled,
    /// The handler returned an error or panicked; the text is the reason that a retry log line
    /// or a dead letter carries.
    Failed(String),
}

impl Outcome {
    /// True for [`Outcome::Handled`].
    pub fn is_handled(&self) -> bool {
        matches!(self, Outcome::Handled)
    }
}

/// Every call of a handler with an event of type `E`, oldest first: what it was called with and
/// how the call ended (a retried event appears once per attempt). Messages that did not decode
/// into `E` never reach a handler; find them with [`dead_letters`].
///
/// ```
/// # use eventbus_core::prelude::*;
/// # use eventbus_core::testing;
/// # #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
/// # pub struct OrderCreated { pub order_id: String }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
/// let bus = Bus::memory();
/// bus.subscribe(|_: OrderCreated| async {}).await?;
/// bus.publish(&OrderCreated { order_id: "o-1".into() }).await?;
/// testing::settle(&bus).await;
/// let calls = testing::consumed::<OrderCreated>(&bus).await;
/// assert_eq!(calls[0].event, OrderCreated { order_id: "o-1".into() });
/// assert!(calls[0].outcome.is_handled());
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// Like [`published`].
pub async fn consumed<E: Event>(bus: &Bus) -> Vec<Consumed<E>> {
    let calls = bus
        .engine
        .calls(E::DESCRIPTOR.rust_type)
        .unwrap_or_else(|| not_recording());
    calls
        .into_iter()
        .map(|c| Consumed {
            handler: c.handler.to_string(),
            event: decode_recorded::<E>(&c.data),
            metadata: c.meta,
            attempt: c.attempt,
            outcome: match c.outcome {
                CallOutcome::Handled => Outcome::Handled,
                CallOutcome::Failed(reason) => Outcome::Failed(reason),
            },
        })
        .collect()
}

/// Calls the registered `#[handler]` named `name` (its fn name or full path) once with
/// `event`, through the codec, as if the event had arrived. Returns its reply (`()` for events
/// without one). Fails with [`Error::HandlerNotFound`] or [`Error::AmbiguousHandler`] when
/// `name` names no handler of `E` or several, and with [`Error::Remote`] when the handler fails.
pub async fn call_handler<E: Event>(bus: &Bus, name: &str, event: &E) -> Result<E::Reply> {
    let suffix = format!("::{name}");
    let found: Vec<_> = registered_handlers()
        .into_iter()
        .filter(|h| h.event.rust_type == E::DESCRIPTOR.rust_type)
        .filter(|h| h.name == name || h.name.ends_with(&suffix))
        .collect();
    let reg = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::HandlerNotFound {
                event: E::DESCRIPTOR.rust_type,
                name: name.to_owned(),
            });
        }
        many => {
            return Err(Error::AmbiguousHandler {
                event: E::DESCRIPTOR.rust_type,
                name: name.to_owned(),
                matches: many.iter().map(|h| h.name).collect(),
            });
        }
    };
    // A reply channel makes the handler serialize its reply; nothing is sent to it.
    let opts = PublishOptions {
        reply_to: Some("call_handler".to_owned()),
        ..PublishOptions::default()
    };
    let out = bus.engine.encode(event, &opts)?;
    let ctx = Context::new(
        bus.engine.clone(),
        out.message.meta().clone(),
        out.channel.clone(),
        1,
        None,
        Arc::from(reg.name),
    );
    match (reg.make)()(out.message.data(), ctx).await {
        Ok(reply) => {
            let reply = reply.unwrap_or_else(|| Bytes::from_static(b"null"));
            serde_json::from_slice(&reply)
                .map_err(|e| Error::Decode(DecodeError::new(&out.channel, e, &reply)))
        }
        Err(HandlerFailure::Undecodable(e)) => Err(Error::Decode(e)),
        Err(HandlerFailure::Failed(e)) => Err(Error::Remote {
            event: E::DESCRIPTOR.rust_type,
            message: e.to_string(),
        }),
    }
}

/// A [`Context`] for calling a handler function directly, as if `event` had arrived on its
/// channel for the first time.
///
/// ```
/// # use eventbus_core::prelude::*;
/// # use eventbus_core::testing;
/// # #[derive(Event, Serialize, Deserialize, Debug, Clone)]
/// # pub struct OrderCreated { pub order_id: String }
/// async fn charge(ev: OrderCreated, ctx: Context) -> Result<(), HandlerError> {
///     assert_eq!(ctx.attempt(), 1);
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), HandlerError> {
/// let bus = Bus::memory();
/// let ev = OrderCreated { order_id: "o-1".into() };
/// charge(ev.clone(), testing::context(&bus, &ev)).await?;
/// # Ok(()) }
/// ```
pub fn context<E: Event>(bus: &Bus, event: &E) -> Context {
    let meta = bus.engine.metadata(
        E::DESCRIPTOR.name,
        Some(E::DESCRIPTOR.version),
        &PublishOptions::default(),
    );
    Context::new(
        bus.engine.clone(),
        meta,
        bus.engine.key(&event.channel()),
        1,
        None,
        Arc::from("test"),
    )
}

fn sent<E: Event>(bus: &Bus) -> Vec<(Metadata, Bytes)> {
    bus.engine
        .sent(E::DESCRIPTOR.rust_type)
        .unwrap_or_else(|| not_recording())
        .into_iter()
        .map(|s| (s.meta, s.data))
        .collect()
}

fn decode_recorded<E: Event>(data: &[u8]) -> E {
    serde_json::from_slice(data).unwrap_or_else(|e| {
        panic!(
            "a recorded {} does not decode back into its type ({e}); payload: {}",
            E::DESCRIPTOR.rust_type,
            String::from_utf8_lossy(data)
        )
    })
}

fn not_recording() -> ! {
    panic!(
        "this bus does not record what it publishes and handles; build it with \
         configure(|c| c.record = Some(true))"
    )
}
