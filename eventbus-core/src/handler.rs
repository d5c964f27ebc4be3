//! Handlers: async functions that receive typed events.
//!
//! A handler is a plain async fn taking the event, optionally followed by a [`Context`]:
//!
//! ```
//! use eventbus_core::prelude::*;
//!
//! #[derive(Event, Serialize, Deserialize, Debug, Clone)]
//! pub struct OrderCreated { pub order_id: String }
//!
//! // Registered with every binary that links this code; started by `run_registered_handlers`.
//! #[handler(group = "billing", concurrency = 8, max_deliveries = 5)]
//! async fn charge(ev: OrderCreated, ctx: Context) -> Result<(), HandlerError> {
//!     tracing::info!(order = %ev.order_id, attempt = ctx.attempt(), "charging");
//!     Ok(())
//! }
//!
//! // Or without the attribute, explicitly on one bus:
//! # async fn demo() -> eventbus_core::Result<()> {
//! let bus = Bus::memory();
//! bus.subscribe(|ev: OrderCreated| async move { println!("{}", ev.order_id) }).await?;
//! # Ok(()) }
//! ```
//!
//! It returns `()` or `Result<(), E>` for any `E: Into<HandlerError>`; a handler of a request
//! event (`#[event(reply = T)]`) returns `Result<T, E>`. An error or a panic is a failed delivery:
//! it is retried with exponential backoff up to `max_deliveries`, then dead-lettered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::context::Context;
use crate::error::{DecodeError, HandlerError};
use crate::event::{Event, EventDescriptor};
use crate::transport::ConsumeMode;

/// How a handler is run. `#[handler(...)]` attributes map one to one onto these fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerOptions {
    /// Consumer group for durable events (default: the handler's own path, so two handlers never
    /// steal each other's events while two instances of one handler share the work). Ignored
    /// for ephemeral events, where every subscriber gets every message.
    pub group: Option<&'static str>,
    /// Maximum handler calls in flight at once (default 1: in order).
    pub concurrency: usize,
    /// Deliveries tried before the message is dead-lettered (default 5).
    pub max_deliveries: u32,
    /// Delay before the first retry; doubled for each further one (default 100 ms).
    pub backoff_initial: Duration,
    /// Upper bound of the retry delay (default 10 s).
    pub backoff_max: Duration,
    /// Group (competing consumers) or broadcast (every instance sees every event).
    pub mode: ConsumeMode,
    /// The idempotency guard of durable events: `Some(ttl)` skips deliveries of event ids this
    /// handler's group already handled, remembered for `ttl`; `None` (the default) calls the
    /// handler on every delivery. See [`HandlerOptions::dedup`].
    pub dedup: Option<Duration>,
}

impl HandlerOptions {
    /// The defaults, usable in `const` context.
    pub const DEFAULT: HandlerOptions = HandlerOptions {
        group: None,
        concurrency: 1,
        max_deliveries: 5,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        mode: ConsumeMode::Group,
        dedup: None,
    };

    /// How long `#[handler(dedup)]` remembers a handled event id: 24 hours.
    pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(86_400);

    /// The defaults.
    pub const fn new() -> Self {
        Self::DEFAULT
    }

    /// Sets the consumer group.
    pub const fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Sets the concurrency limit (at least 1).
    pub const fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = if n == 0 { 1 } else { n };
        self
    }

    /// Sets the number of deliveries before dead-lettering (at least 1).
    pub const fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = if n == 0 { 1 } else { n };
        self
    }

    /// Sets the first retry delay.
    pub const fn backoff(mut self, initial: Duration) -> Self {
        self.backoff_initial = initial;
        self
    }

    /// Sets the retry delay bound.
    pub const fn backoff_max(mut self, max: Duration) -> Self {
        self.backoff_max = max;
        self
    }

    /// Every instance handles every event (durable: `XREAD` from its own position).
    pub const fn broadcast(mut self) -> Self {
        self.mode = ConsumeMode::Broadcast;
        self
    }

    /// Turns on the idempotency guard: a delivery of an event id that this handler's group
    /// handled successfully within the last `ttl` is acked without calling the handler (and
    /// counted in [`StatsSnapshot::duplicates_skipped`](crate::StatsSnapshot::duplicates_skipped)).
    /// `#[handler(dedup)]` is `.dedup(HandlerOptions::DEFAULT_DEDUP_TTL)` (24 h),
    /// `#[handler(dedup, dedup_ttl_secs = 3600)]` is `.dedup(Duration::from_secs(3600))`. A
    /// `ttl` below one millisecond is raised to one.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventbus_core::HandlerOptions;
    /// let options = HandlerOptions::new().group("billing").dedup(Duration::from_secs(3600));
    /// assert_eq!(options.dedup, Some(Duration::from_secs(3600)));
    /// ```
    ///
    /// Durable delivery is at least once: when a consumer dies after its handler succeeded but
    /// before the ack reached Redis, the consumer that claims the entry handles it again. With
    /// `dedup`, for every stream delivery the dispatcher
    ///
    /// 1. checks whether the group marked the event id (Redis: `EXISTS`); if it did, the handler
    ///    is not called and the entry is acked;
    /// 2. after the handler succeeded, marks the id (Redis: `SET <key> 1 PX <ttl>`), then acks;
    /// 3. marks nothing after a failed call, so retries and redeliveries run the handler again.
    ///
    /// The mark is the key `<namespace.>eventbus.dedup:<channel>:<group>:<event id>`; the memory
    /// transport keeps the same keys in a map shared by its clones, with the same expiry. The
    /// event id is the CloudEvents `id`. A message without one (a bare payload from a foreign
    /// producer) is recognised by its stream entry id instead: a redelivery of that entry is
    /// skipped, the same payload added again as a new entry is not.
    ///
    /// What it does not cover:
    ///
    /// * a crash after the handler's effects and before the mark is written: the event is
    ///   handled again (the guard narrows the window from "until the ack" to "until the mark",
    ///   it does not close it). For effects that must happen once, make them idempotent
    ///   themselves (a unique key in the same database transaction);
    /// * two calls at the same time: the check is not a lock, so the same event id delivered
    ///   to two consumers at once (published twice, or claimed from a consumer that still runs
    ///   it) runs twice;
    /// * marks older than `ttl`: choose it longer than an entry can stay pending (consumer
    ///   outages, `claim_idle`) and than a dead letter waits for its replay;
    /// * a transport that fails: when the check fails the handler is called (at least once
    ///   still holds), when the mark fails the entry is acked anyway; both are logged.
    ///
    /// A replayed dead letter keeps its event id: groups that handled it already skip it.
    ///
    /// Cost: two more round trips per delivery, and one key per handled event for `ttl`
    /// (at 1,000 events/s, a 24 h `ttl` keeps 86.4 million keys: size it to your rate).
    ///
    /// Only for durable events read by a consumer group: on an ephemeral event `#[handler]`
    /// fails to compile and [`Bus::subscribe_with`](crate::Bus::subscribe_with) returns
    /// [`Error::Config`](crate::Error::Config), as it does with [`broadcast`](Self::broadcast).
    pub const fn dedup(mut self, ttl: Duration) -> Self {
        self.dedup = Some(if ttl.as_millis() == 0 {
            Duration::from_millis(1)
        } else {
            ttl
        });
        self
    }

    /// The delay before delivery number `attempt + 1` after `attempt` failed ones.
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a message was not handled.
#[derive(Debug)]
pub enum HandlerFailure {
    /// The payload does not decode into the event type: dead-lettered at once.
    Undecodable(DecodeError),
    /// The handler returned an error or panicked.
    Failed(HandlerError),
}

/// The boxed future of a type-erased handler call. `Ok(Some(json))` carries a reply.
pub type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<Bytes>, HandlerFailure>> + Send>>;

/// A handler with its event type erased: takes the payload JSON (the envelope's `data`) and the
/// context, parses the payload and calls the typed function.
pub type ErasedHandler = Arc<dyn Fn(Bytes, Context) -> HandlerFuture + Send + Sync>;

/// A handler found through `inventory`: what `#[handler]` submits.
#[derive(Debug)]
pub struct HandlerRegistration {
    /// The function's path (`billing::handlers::charge`).
    pub name: &'static str,
    /// The event it handles.
    pub event: EventDescriptor,
    /// How it runs.
    pub options: HandlerOptions,
    /// Builds the erased handler.
    pub make: fn() -> ErasedHandler,
}

inventory::collect!(HandlerRegistration);

/// Every `#[handler]` linked into this binary, sorted by event channel then name.
pub fn registered_handlers() -> Vec<&'static HandlerRegistration> {
    let mut all: Vec<&'static HandlerRegistration> =
        inventory::iter::<HandlerRegistration>.into_iter().collect();
    all.sort_by(|a, b| (a.event.channel, a.name).cmp(&(b.event.channel, b.name)));
    all
}

/// What a handler of `E` may return: `()`, or `Result<E::Reply, impl Into<HandlerError>>`
/// (`Result<(), _>` for events without a reply).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a handler of `{E}`",
    label = "a handler of `{E}` returns `()` or `Result<R, E>` where `R` is the event's reply type (`()` unless declared with `#[event(reply = T)]`) and `E: Into<HandlerError>`"
)]
pub trait HandlerReturn<E: Event> {
    /// Converts the return value; the reply is serialized only when `want_reply`.
    fn into_reply(self, want_reply: bool) -> Result<Option<Bytes>, HandlerError>;
}

impl<E: Event<Reply = ()>> HandlerReturn<E> for () {
    fn into_reply(self, want_reply: bool) -> Result<Option<Bytes>, HandlerError> {
        Ok(want_reply.then(|| Bytes::from_static(b"null")))
    }
}

impl<E: Event, Er: Into<HandlerError>> HandlerReturn<E> for Result<E::Reply, Er> {
    fn into_reply(self, want_reply: bool) -> Result<Option<Bytes>, HandlerError> {
        let reply = self.map_err(Into::into)?;
        if !want_reply {
            return Ok(None);
        }
        serde_json::to_vec(&reply)
            .map(|v| Some(Bytes::from(v)))
            .map_err(|e| HandlerError::permanent(format!("cannot encode the reply as JSON: {e}")))
    }
}

/// A function usable as a handler of `E`: `async fn(E) -> R` or `async fn(E, Context) -> R`.
/// `Args` only tells the two shapes apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler of `{E}`",
    label = "expected `async fn({E})` or `async fn({E}, Context)` returning `()` or `Result<_, _>`"
)]
pub trait Handler<E: Event, Args>: Clone + Send + Sync + 'static {
    /// The future the call returns.
    type Future: Future<Output = Result<Option<Bytes>, HandlerError>> + Send + 'static;
    /// Calls the handler.
    fn call(&self, event: E, ctx: Context, want_reply: bool) -> Self::Future;
}

/// Future adapter that converts a handler's return value.
#[doc(hidden)]
pub struct Ret<F, E> {
    fut: Pin<Box<F>>,
    want_reply: bool,
    _e: std::marker::PhantomData<fn() -> E>,
}

impl<F, E> Future for Ret<F, E>
where
    E: Event,
    F: Future,
    F::Output: HandlerReturn<E>,
{
    type Output = Result<Option<Bytes>, HandlerError>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let want = self.want_reply;
        self.fut.as_mut().poll(cx).map(|r| r.into_reply(want))
    }
}

impl<E, F, Fut> Handler<E, (E,)> for F
where
    E: Event,
    F: Fn(E) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerReturn<E>,
{
    type Future = Ret<Fut, E>;
    fn call(&self, event: E, _ctx: Context, want_reply: bool) -> Self::Future {
        Ret {
            fut: Box::pin(self(event)),
            want_reply,
            _e: std::marker::PhantomData,
        }
    }
}

impl<E, F, Fut> Handler<E, (E, Context)> for F
where
    E: Event,
    F: Fn(E, Context) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerReturn<E>,
{
    type Future = Ret<Fut, E>;
    fn call(&self, event: E, ctx: Context, want_reply: bool) -> Self::Future {
        Ret {
            fut: Box::pin(self(event, ctx)),
            want_reply,
            _e: std::marker::PhantomData,
        }
    }
}

/// Erases a typed handler: the returned closure parses the payload into `E` and calls it.
pub fn erase<E, H, Args>(handler: H) -> ErasedHandler
where
    E: Event,
    H: Handler<E, Args>,
    Args: 'static,
{
    Arc::new(move |data: Bytes, ctx: Context| {
        let parsed: Result<E, DecodeError> =
            serde_json::from_slice(&data).map_err(|e| DecodeError::new(ctx.channel(), e, &data));
        match parsed {
            Ok(event) => {
                let want_reply = ctx.metadata().reply_to.is_some();
                let fut = handler.call(event, ctx, want_reply);
                Box::pin(async move { fut.await.map_err(HandlerFailure::Failed) }) as HandlerFuture
            }
            Err(e) => Box::pin(std::future::ready(Err(HandlerFailure::Undecodable(e)))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let o = HandlerOptions::new()
            .backoff(Duration::from_millis(10))
            .backoff_max(Duration::from_millis(50));
        assert_eq!(o.backoff_for(1), Duration::from_millis(10));
        assert_eq!(o.backoff_for(2), Duration::from_millis(20));
        assert_eq!(o.backoff_for(3), Duration::from_millis(40));
        assert_eq!(o.backoff_for(4), Duration::from_millis(50));
        assert_eq!(o.backoff_for(40), Duration::from_millis(50));
    }
}
