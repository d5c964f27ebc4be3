//! The public API: [`Bus`] publishes events, subscribes handlers, makes requests and runs the
//! registered handlers. It is a handle over the bus's shared state (`engine.rs`); this module and
//! the crate root are the only ones that know it.

mod builder;
#[cfg(feature = "conformance")]
pub mod conformance;
mod run;
mod stop;
pub mod testing;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use self::builder::BusBuilder;
use crate::config::BusConfig;
use crate::dispatch::{self, Running};
use crate::engine::{Engine, PublishOptions};
use crate::error::{Error, Result};
use crate::event::{Event, Request};
use crate::handler::{self, ErasedHandler, Handler, HandlerFailure, HandlerOptions};
use crate::pattern::{PatternMessage, PatternReturn};
use crate::stats::{Stats, StatsSnapshot};
use crate::transport::{Receipt, Transport};

/// A message bus: publish typed events, run handlers. Cheap to clone (an `Arc` inside).
///
/// `Bus::memory()` is an in-process bus, the default for tests and embedded use; a bus over Redis
/// comes from `eventbus-redis` (or `eventbus::from_env()`, which picks Redis when `REDIS_URL`
/// is set). The API is the same.
#[derive(Clone)]
pub struct Bus {
    engine: Arc<Engine>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.engine.config();
        f.debug_struct("Bus")
            .field("transport", &self.engine.transport().name())
            .field("namespace", &config.namespace)
            .field("instance", &config.instance)
            .finish_non_exhaustive()
    }
}

/// A running handler started with [`Bus::subscribe`]. Dropping it leaves the handler running;
/// [`SubscriptionHandle::unsubscribe`] stops it after its in-flight calls finish.
#[derive(Debug)]
pub struct SubscriptionHandle {
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl From<Running> for SubscriptionHandle {
    fn from(r: Running) -> Self {
        SubscriptionHandle {
            cancel: r.cancel,
            done: r.done,
        }
    }
}

impl SubscriptionHandle {
    /// Stops reading, finishes in-flight handler calls, acks, and returns.
    pub async fn unsubscribe(self) {
        self.cancel.cancel();
        let _ = self.done.await;
    }
}

impl Bus {
    /// An in-process bus on a new [`MemoryTransport`](crate::MemoryTransport).
    pub fn memory() -> Bus {
        Bus::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// The settings.
    pub fn config(&self) -> &BusConfig {
        self.engine.config()
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        self.engine.transport()
    }

    /// Counters of published, handled, failed, retried, dead-lettered and dropped messages.
    pub fn stats(&self) -> StatsSnapshot {
        self.engine.stats().snapshot()
    }

    /// The shared counters, for a transport or subscription built outside the bus that should
    /// count into this bus's [`stats`](Bus::stats).
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.engine.stats().clone()
    }

    /// The consumer name this bus's consumer-group members use, once its first durable handler
    /// started: the [instance name](crate::BusConfig::instance), or that name with a suffix
    /// (`-2`, `-3`, …) when another live process holds it. See the README's Shutdown section.
    pub fn consumer_name(&self) -> Option<&str> {
        self.engine.consumers().name()
    }

    /// The physical key of a channel: the namespace prefix plus the channel.
    pub fn key(&self, channel: &str) -> String {
        self.engine.key(channel)
    }

    /// The stream key (durable) or channel (ephemeral, untemplated) of an event type, with the
    /// namespace.
    pub fn channel_of<E: Event>(&self) -> String {
        self.engine.key(E::DESCRIPTOR.channel)
    }

    /// The dead-letter stream of an event type: `<stream>.dlq` for durable types,
    /// `<channel>.dlq` for ephemeral ones, a templated channel written as its pattern
    /// (`tenant.*.presence.dlq`).
    pub fn dead_letter_key_of<E: Event>(&self) -> String {
        self.engine.dead_letter_key(&E::DESCRIPTOR)
    }

    /// The application state of type `T` given to [`BusBuilder::state`]. Handlers take it as a
    /// [`State<T>`](crate::State) argument instead, checked when they start.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&T> {
        self.engine.state::<T>()
    }

    /// Publishes an event. Returns once the transport accepted it: for a durable event the
    /// receipt holds the stream entry id, for an ephemeral one the number of subscribers that
    /// received it.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Receipt> {
        self.publish_with(event, PublishOptions::default()).await
    }

    /// Publishes an event with a correlation id, causation id or headers.
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<Receipt> {
        let out = self.engine.encode(event, &options)?;
        self.engine.send(E::DESCRIPTOR.rust_type, out).await
    }

    /// Publishes several events of one type in one batch (pipelined on Redis).
    pub async fn publish_all<E: Event>(&self, events: &[E]) -> Result<Vec<Receipt>> {
        let options = PublishOptions::default();
        let outs = events
            .iter()
            .map(|e| self.engine.encode(e, &options))
            .collect::<Result<Vec<_>>>()?;
        self.engine.send_all(E::DESCRIPTOR.rust_type, outs).await
    }

    /// Runs `handler` for every event of type `E` on this bus, with default options. The
    /// default group of a durable subscription is the handler's type name.
    ///
    /// ```
    /// # use eventbus_core::prelude::*;
    /// # #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    /// # #[event(ephemeral)]
    /// # pub struct Ping { n: u32 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
    /// let bus = Bus::memory();
    /// bus.subscribe(|p: Ping, ctx: Context| async move {
    ///     println!("ping {} on {}", p.n, ctx.channel());
    ///     Ok::<_, HandlerError>(())
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe<E, H, Args>(&self, handler: H) -> Result<SubscriptionHandle>
    where
        E: Event,
        H: Handler<E, Args>,
        Args: 'static,
    {
        self.subscribe_with(handler, HandlerOptions::DEFAULT).await
    }

    /// Like [`Bus::subscribe`] with options (group, concurrency, retries, broadcast, dedup).
    ///
    /// Fails with [`Error::MissingState`] when the bus lacks the state of a `State<T>` argument,
    /// with [`Error::InvalidOptions`] for [`HandlerOptions::dedup`] or `broadcast` on an
    /// ephemeral event or for both together, and with the transport's error when it cannot keep
    /// dedup marks.
    pub async fn subscribe_with<E, H, Args>(
        &self,
        handler: H,
        options: HandlerOptions,
    ) -> Result<SubscriptionHandle>
    where
        E: Event,
        H: Handler<E, Args>,
        Args: 'static,
    {
        let name: Arc<str> = Arc::from(std::any::type_name::<H>());
        crate::state::check(&name, &H::required_state(), self.engine.state_map())?;
        let erased = handler::erase::<E, H, Args>(handler);
        dispatch::start(&self.engine, name, E::DESCRIPTOR, options, erased)
            .await
            .map(SubscriptionHandle::from)
    }

    /// Subscribes a raw handler to every pub/sub channel matching a Redis glob pattern
    /// (`*`, `?`, `[..]`), whatever the event type. The handler gets the concrete channel and
    /// returns `()` or `Result<(), E>`, like a typed handler.
    ///
    /// ```
    /// # use eventbus_core::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
    /// let bus = Bus::memory();
    /// bus.subscribe_pattern("tenant.*.presence", |msg: PatternMessage| async move {
    ///     let body: serde_json::Value = msg.json()?;
    ///     println!("{} -> {body}", msg.channel());
    ///     Ok::<_, HandlerError>(())
    /// }).await?;
    /// bus.subscribe_pattern("tenant.*.typing", |msg: PatternMessage| async move {
    ///     println!("typing on {}", msg.channel());
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_pattern<F, Fut>(
        &self,
        pattern: &str,
        handler: F,
    ) -> Result<SubscriptionHandle>
    where
        F: Fn(PatternMessage) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: PatternReturn,
    {
        if pattern.is_empty() || pattern.chars().any(char::is_whitespace) {
            return Err(Error::InvalidPattern {
                pattern: pattern.to_owned(),
                reason: "it must be non-empty and without whitespace",
            });
        }
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |data, ctx| {
            let fut = handler(PatternMessage::new(ctx, data));
            Box::pin(async move {
                fut.await
                    .into_outcome()
                    .map(|()| None)
                    .map_err(HandlerFailure::Failed)
            })
        });
        dispatch::start_pattern(&self.engine, pattern, erased)
            .await
            .map(SubscriptionHandle::from)
    }

    /// Sends a request event and waits for its handler's typed reply (default timeout:
    /// [`BusConfig::request_timeout`]).
    ///
    /// ```
    /// # use eventbus_core::prelude::*;
    /// #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    /// #[event(ephemeral, reply = UserFound)]
    /// pub struct FindUser { pub id: u64 }
    /// #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    /// pub struct UserFound { pub name: String }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
    /// let bus = Bus::memory();
    /// bus.subscribe(|q: FindUser| async move {
    ///     Ok::<_, HandlerError>(UserFound { name: format!("user-{}", q.id) })
    /// }).await?;
    /// let found: UserFound = bus.request(&FindUser { id: 7 }).await?;
    /// assert_eq!(found.name, "user-7");
    /// # Ok(()) }
    /// ```
    pub async fn request<Q: Request>(&self, request: &Q) -> Result<Q::Reply> {
        self.request_with_timeout(request, self.engine.config().request_timeout)
            .await
    }

    /// [`Bus::request`] with its own timeout instead of [`BusConfig::request_timeout`].
    pub async fn request_with_timeout<Q: Request>(
        &self,
        request: &Q,
        timeout: Duration,
    ) -> Result<Q::Reply> {
        crate::reply::request(&self.engine, request, timeout).await
    }
}
