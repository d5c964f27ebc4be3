//! Events: plain Rust types that know their channel, durability and version.
//!
//! An event is a serde type with `#[derive(Event)]`. The derive gives it a channel name computed
//! from its type path at compile time (`shop::orders::OrderCreated` travels on
//! `shop.orders.OrderCreated`), so no channel name is ever typed by hand on the publishing or the
//! subscribing side.
//!
//! # Ephemeral or durable?
//!
//! * **Durable** (the default, `#[event(durable)]`): kept in a log (a Redis Stream) until every
//!   handler group has handled it. Delivery is *at least once*: an event whose `publish` returned
//!   `Ok` reaches each group even if the consumer was down at the time, and a failing handler is
//!   retried and finally dead-lettered. Use it for facts other services act on: orders, payments.
//! * **Ephemeral** (`#[event(ephemeral)]`): fanned out live to whoever listens right now (Redis
//!   pub/sub), *at most once*. Nothing is stored; a subscriber that is down misses it. Use it for
//!   presence, progress, cache invalidation: things that are worthless a minute later.

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Whether an event type is kept until handled (durable) or fanned out live (ephemeral).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Durability {
    /// Stored in a log (Redis Stream) and delivered at least once to every handler group.
    Durable,
    /// Published live (Redis pub/sub) and delivered at most once to every current subscriber.
    Ephemeral,
}

impl Durability {
    /// `"durable"` or `"ephemeral"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Durability::Durable => "durable",
            Durability::Ephemeral => "ephemeral",
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the bus needs to know about an event type, known at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventDescriptor {
    /// The Rust type path, for messages (`shop::orders::OrderCreated`).
    pub rust_type: &'static str,
    /// The stable event name, sent as the CloudEvents `type` (`shop.orders.OrderCreated`).
    pub name: &'static str,
    /// The channel (pub/sub channel or stream key). For a templated channel this is the template,
    /// e.g. `tenant.{tenant}.presence`.
    pub channel: &'static str,
    /// A glob matching every channel of this type: the channel itself, or the template with each
    /// `{field}` replaced by `*` (`tenant.*.presence`).
    pub pattern: &'static str,
    /// Durable (stream) or ephemeral (pub/sub).
    pub durability: Durability,
    /// The schema version of the payload, sent as the `dataversion` attribute.
    pub version: u32,
    /// Approximate stream length kept for durable events (`MAXLEN ~ N`); `None` uses the bus default.
    pub max_len: Option<u64>,
    /// The Rust type of the reply, for request events (`#[event(reply = T)]`).
    pub reply: Option<&'static str>,
}

impl EventDescriptor {
    /// True when the channel is a template with `{field}` placeholders.
    pub const fn is_templated(&self) -> bool {
        let b = self.channel.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'{' {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// A type that travels on the bus. Implement it with `#[derive(Event)]`, never by hand.
///
/// ```
/// use eventbus_core::prelude::*;
///
/// #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
/// pub struct OrderCreated {
///     pub order_id: String,
///     pub amount_cents: u64,
/// }
///
/// // The channel comes from the type path; in a doctest the module is the doctest crate.
/// assert!(OrderCreated::CHANNEL.ends_with(".OrderCreated"));
/// assert_eq!(OrderCreated::DESCRIPTOR.durability, Durability::Durable);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event type",
    note = "add `#[derive(Event, Serialize, Deserialize)]` to the type's definition"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Everything known about this type at compile time.
    const DESCRIPTOR: EventDescriptor;
    /// The channel (or channel template) of this type.
    const CHANNEL: &'static str = Self::DESCRIPTOR.channel;

    /// The reply a handler of this event returns: `()` unless declared with
    /// `#[event(reply = T)]`, in which case `bus.request(&event)` returns a `T`.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// The concrete channel of this value: the channel itself, or the template filled with this
    /// value's fields.
    fn channel(&self) -> Cow<'static, str> {
        Cow::Borrowed(Self::DESCRIPTOR.channel)
    }
}

/// An event stored until every group handled it: `#[derive(Event)]` implements it for durable
/// events (the default), not for `#[event(ephemeral)]` ones. The `#[handler]` options that only
/// make sense for a stream, `broadcast` and `dedup`, require it, so that on an ephemeral event
/// they fail to compile at the option:
///
/// ```compile_fail
/// use eventbus_core::prelude::*;
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(ephemeral)]
/// pub struct Tick;
///
/// #[handler(dedup)] // error: `Tick` is ephemeral, and `dedup` and `broadcast` need a durable event
/// async fn on_tick(_ev: Tick) {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is ephemeral, and `dedup` and `broadcast` need a durable event",
    label = "needs a durable event",
    note = "an ephemeral event goes over pub/sub, which delivers each message once to every live subscriber and never redelivers: `broadcast` (every instance reads the stream) and `dedup` (skip redeliveries) are options of durable events; drop the option, or make `{Self}` durable"
)]
pub trait DurableEvent: Event {
    /// Mentioned by the code of `#[handler]` to require the trait; does nothing.
    #[doc(hidden)]
    fn __durable() {}
}

/// Marker for events declared with `#[event(reply = T)]`: they can be sent with
/// [`Bus::request`](crate::Bus::request) and their handlers return `Result<T, _>`.
pub trait Request: Event {}

/// An event type known to the registry. `#[derive(Event)]` submits one per type, so the topology
/// snapshot and the duplicate-channel check see every event linked into the binary.
#[derive(Debug)]
pub struct EventRegistration {
    /// The type's descriptor.
    pub descriptor: EventDescriptor,
}

inventory::collect!(EventRegistration);

/// Every event type linked into this binary, sorted by channel then Rust type.
pub fn registered_events() -> Vec<EventDescriptor> {
    let mut all: Vec<EventDescriptor> = inventory::iter::<EventRegistration>
        .into_iter()
        .map(|r| r.descriptor)
        .collect();
    all.sort_by(|a, b| (a.channel, a.rust_type).cmp(&(b.channel, b.rust_type)));
    all.dedup();
    all
}
