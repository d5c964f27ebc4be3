//! Helpers for users' tests.
//!
//! The in-memory bus is a test double with the semantics of the Redis one. A unit test
//! publishes, waits with [`Bus::settle`](crate::Bus::settle) (no sleeps), and asserts on
//! [`Bus::published`](crate::Bus::published) and [`dead_letters`]:
//!
//! ```
//! use eventbus_core::prelude::*;
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
//! bus.settle().await;
//!
//! assert_eq!(bus.published::<PaymentRequested>(), vec![PaymentRequested { order_id: "o-1".into() }]);
//! let dead = eventbus_core::testing::dead_letters::<OrderCreated>(&bus).await?;
//! assert_eq!(dead.len(), 1);
//! assert_eq!(dead[0].reason, "negative amount");
//! assert_eq!(dead[0].event.as_ref().unwrap().order_id, "o-2");
//! # Ok(()) }
//! ```

use std::path::Path;

use crate::bus::Bus;
use crate::envelope;
use crate::error::{DecodeError, Result};
use crate::event::Event;
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
                "no topology snapshot at {}: it was written now; review and commit it",
                path.display()
            );
        }
    }
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("cannot write the topology snapshot {}: {e}", path.display());
    }
}
