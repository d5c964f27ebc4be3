//! # eventbus-core
//!
//! Typed events for services that talk over a message bus. Declare an event as a plain serde
//! struct with `#[derive(Event)]`; its channel name comes from its type path, so publisher and
//! subscriber can never disagree on it. Register handlers with `#[handler]`; one call,
//! [`Bus::run_registered_handlers`], starts all of them.
//!
//! This crate holds everything that does not depend on a backend: the [`Event`] trait, the
//! CloudEvents [`envelope`] and its codec, the [`Bus`] API, the dispatcher (concurrency limits,
//! retries with backoff, dead-lettering, panics caught), the in-process [`memory`] transport
//! that is the default bus and the test double, and [`testing`] helpers. The Redis backend lives
//! in `eventbus-redis`; the `eventbus` crate puts both behind one dependency.
//!
//! ```
//! use eventbus_core::prelude::*;
//!
//! #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
//! pub struct OrderCreated { pub order_id: String, pub amount_cents: u64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eventbus_core::Result<()> {
//! let bus = Bus::memory();
//! bus.subscribe(|ev: OrderCreated| async move {
//!     println!("order {} for {} cents", ev.order_id, ev.amount_cents);
//! }).await?;
//! bus.publish(&OrderCreated { order_id: "o-1".into(), amount_cents: 4999 }).await?;
//! eventbus_core::testing::settle(&bus).await; // every handler is done: no sleeps in tests
//! assert_eq!(eventbus_core::testing::published::<OrderCreated>(&bus).await.len(), 1);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod activity;
mod bus;
pub mod channel;
mod config;
mod consumers;
mod context;
mod dedup;
mod dispatch;
mod engine;
pub mod envelope;
mod error;
pub mod event;
mod generated;
pub mod handler;
pub mod identity;
pub mod inspect;
pub mod memory;
mod options;
mod pattern;
pub mod queue;
pub mod replay;
mod reply;
pub mod state;
pub mod stats;
pub mod topology;
pub mod transport;
mod type_check;

#[cfg(feature = "conformance")]
pub use bus::conformance;
pub use bus::{Bus, BusBuilder, SubscriptionHandle, testing};
pub use config::BusConfig;
pub use context::Context;
pub use engine::{PublishOptions, RECORD_LIMIT};
pub use envelope::Metadata;
pub use error::{BoxError, DecodeError, Error, HandlerError, PermissionDenied, Result};
pub use event::{Durability, DurableEvent, Event, EventDescriptor, EventRegistration, Request};
pub use handler::{HandlerOptions, HandlerRegistration};
pub use memory::MemoryTransport;
pub use pattern::{PatternMessage, PatternReturn};
pub use state::{State, StateRequirement};
pub use stats::StatsSnapshot;
pub use transport::{ConsumeMode, Receipt, Transport};

/// `#[derive(Event)]`: makes a serde type an event. See the [`Event`] trait and the crate docs.
///
/// Attributes, all in `#[event(...)]`:
///
/// | attribute | meaning |
/// |---|---|
/// | `durable` (default) / `ephemeral` | Redis Stream with consumer groups, or pub/sub |
/// | `name = "a.b.C"` | the full, stable event name and channel instead of the type path |
/// | `module = "a.b"` | replaces the module path: channel `a.b.TypeName` (the bus's [`namespace`](BusConfig::namespace) prefixes every key) |
/// | `channel = "tenant.{tenant}.orders"` | the channel, a template over the struct's fields (ephemeral only) |
/// | `max_len = N` | approximate stream length kept (durable only; [`EventDescriptor::max_len`], default [`BusConfig::default_max_len`]) |
/// | `version = N` | payload schema version, sent as `dataversion` (default 1) |
/// | `reply = T` | a request event: handlers return `Result<T, _>`, `bus.request` returns `T` |
///
/// An attribute has the name of the field it sets; one that takes a number of seconds or
/// milliseconds carries the unit as a suffix (`dedup_ttl_secs`, `backoff_ms`).
pub use eventbus_derive::Event;

/// `#[handler]`: registers an async fn as the handler of the event type of its first argument.
/// Its further arguments are [`Context`] and [`State<T>`](State); see the
/// [`handler`](mod@handler) module for the accepted signatures.
///
/// Options, each setting a [`HandlerOptions`] field (of the same name, and a builder method
/// too); an option that takes a number of seconds or milliseconds carries the unit as a suffix:
///
/// | option | [`HandlerOptions`] | meaning |
/// |---|---|---|
/// | `group = "billing"` | `group` | the consumer group of a durable event (default: the fn's path) |
/// | `concurrency = N` | `concurrency` | calls in flight at once (default 1: in order) |
/// | `max_deliveries = N` | `max_deliveries` | deliveries before dead-lettering (default 5) |
/// | `backoff_ms = N` | `backoff` | delay before the first retry, doubled for each further one (default 100) |
/// | `backoff_max_ms = N` | `backoff_max` | bound of the retry delay (default 10000) |
/// | `broadcast` | `mode` ([`broadcast`](HandlerOptions::broadcast)) | every instance handles every event of a durable type (no group) |
/// | `dedup` | `dedup` | skip events the group handled already, remembered 24 h ([`HandlerOptions::dedup`]) |
/// | `dedup_ttl_secs = N` | `dedup` | with `dedup`: remember handled events `N` seconds instead |
///
/// `dedup` and `broadcast` on an ephemeral event do not compile (the error points at the
/// option), nor do they together.
pub use eventbus_derive::handler;

/// What most users need: `use eventbus_core::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Bus, Context, Durability, Event, HandlerError, HandlerOptions, PatternMessage, Receipt,
        Request, State, handler,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Used by the code the macros generate. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::generated::*;
    pub use inventory;

    /// Length of `path` with every `::` turned into `.`, plus `.` and `name`.
    pub const fn dotted_len(path: &str, name: &str) -> usize {
        let p = path.as_bytes();
        let mut len = 0;
        let mut i = 0;
        while i < p.len() {
            if i + 1 < p.len() && p[i] == b':' && p[i + 1] == b':' {
                i += 2;
            } else {
                i += 1;
            }
            len += 1;
        }
        if len == 0 {
            name.len()
        } else {
            len + 1 + name.len()
        }
    }

    /// `path` with `::` turned into `.`, then `.` and `name`, as bytes.
    pub const fn dotted<const N: usize>(path: &str, name: &str) -> [u8; N] {
        let mut out = [0u8; N];
        let p = path.as_bytes();
        let mut i = 0;
        let mut o = 0;
        while i < p.len() {
            if i + 1 < p.len() && p[i] == b':' && p[i + 1] == b':' {
                out[o] = b'.';
                i += 2;
            } else {
                out[o] = p[i];
                i += 1;
            }
            o += 1;
        }
        if o > 0 {
            out[o] = b'.';
            o += 1;
        }
        let n = name.as_bytes();
        let mut j = 0;
        while j < n.len() {
            out[o] = n[j];
            o += 1;
            j += 1;
        }
        out
    }

    /// The bytes as `&str`; they come from `&str`s, so this never fails.
    pub const fn utf8(bytes: &'static [u8]) -> &'static str {
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(_) => panic!("channel name is not UTF-8"),
        }
    }

    /// `module_path!()` and a type name joined with dots, as a `&'static str` constant.
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __dotted_path {
        ($path:expr, $name:expr) => {{
            const __EVENTBUS_LEN: usize = $crate::__private::dotted_len($path, $name);
            const __EVENTBUS_BYTES: [u8; __EVENTBUS_LEN] =
                $crate::__private::dotted::<__EVENTBUS_LEN>($path, $name);
            $crate::__private::utf8(&__EVENTBUS_BYTES)
        }};
    }
    pub use crate::__dotted_path as dotted_path;
}
