//! The typed API: publish events, subscribe handlers, make requests, run registered handlers.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::Activity;
use crate::channel::{validate_channel, validate_template_value};
use crate::dispatch::{self, Runner};
use crate::envelope::{Encoded, Metadata, rfc3339};
use crate::error::{Error, HandlerError, Result};
use crate::event::{Durability, Event, EventDescriptor};
use crate::handler::{self, ErasedHandler, Handler, HandlerOptions};
use crate::memory::MemoryTransport;
use crate::reply::ReplyRouter;
use crate::stats::{Stats, StatsSnapshot};
use crate::transport::{
    ConsumeMode, ConsumerSpec, Outgoing, Receipt, StartFrom, SubscribeSpec, Target, Transport,
};

/// Settings of a bus. Build them with [`Bus::builder`].
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Prefix of every channel and stream key (`staging` -> `staging.shop.orders.OrderCreated`),
    /// to isolate environments and test runs on one Redis.
    pub namespace: Option<String>,
    /// The CloudEvents `source` of published events (default: the binary's name).
    pub source: String,
    /// Name of this instance: the base of its consumer name and reply channel (default:
    /// `<host>-<binary>`). Stable across restarts, so a restarted instance re-reads its own
    /// pending entries at once; a lease keeps two live processes from sharing it (the second
    /// gets `<instance>-2`), see [`Bus::consumer_name`].
    pub instance: String,
    /// Pub/sub messages buffered per subscriber before the oldest are dropped (default 65,536,
    /// about what Redis itself buffers for a subscriber before it disconnects it).
    pub subscriber_capacity: usize,
    /// Pub/sub payload bytes buffered per subscriber before the oldest messages are dropped
    /// (default 64 MiB): a stalled subscriber of large messages stays bounded in memory.
    pub subscriber_capacity_bytes: usize,
    /// Stream length kept for durable types without `maxlen` (default 100,000; `None`: unbounded).
    pub default_max_len: Option<u64>,
    /// Timeout of [`Bus::request`] (default 5 s).
    pub request_timeout: Duration,
    /// Entries pending this long with a dead consumer are claimed by a live one (default 30 s).
    pub claim_idle: Duration,
    /// Where a new consumer group starts (default: the beginning of the stream).
    pub start_from: StartFrom,
    /// Largest accepted payload in bytes, on publish and on receive (default 1 MiB).
    pub max_payload_bytes: usize,
    /// How long [`Bus::settle`] waits before it panics (default 30 s).
    pub settle_timeout: Duration,
    /// Keep every published event for [`Bus::published`] (default: on for the memory
    /// transport, off otherwise).
    pub record_published: Option<bool>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            namespace: None,
            source: default_source(),
            instance: crate::identity::default_instance(),
            subscriber_capacity: 65_536,
            subscriber_capacity_bytes: 64 << 20,
            default_max_len: Some(100_000),
            request_timeout: Duration::from_secs(5),
            claim_idle: Duration::from_secs(30),
            start_from: StartFrom::Beginning,
            max_payload_bytes: 1024 * 1024,
            settle_timeout: Duration::from_secs(30),
            record_published: None,
        }
    }
}

fn default_source() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "eventbus".to_owned())
}

/// Builds a [`Bus`]: transport, namespace, state, limits.
///
/// ```
/// use eventbus_core::{Bus, MemoryTransport};
/// struct Db;
/// let shared = MemoryTransport::new();   // two buses on one transport: two service instances
/// let a = Bus::builder().transport(shared.clone()).namespace("test-42").state(Db).build()?;
/// let b = Bus::builder().transport(shared).namespace("test-42").build()?;
/// # let _ = (a, b);
/// # Ok::<(), eventbus_core::Error>(())
/// ```
#[must_use]
pub struct BusBuilder {
    transport: Option<Arc<dyn Transport>>,
    config: BusConfig,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl BusBuilder {
    /// The transport (default: a new [`MemoryTransport`]).
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// The transport, already shared.
    pub fn transport_arc(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Prefix of every channel and stream key.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = Some(namespace.into());
        self
    }

    /// The CloudEvents `source` of published events.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.config.source = source.into();
        self
    }

    /// A stable instance name (consumer name and reply channel).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.config.instance = instance.into();
        self
    }

    /// Application state for handlers, read with [`Context::state`](crate::Context::state).
    /// One value per type.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// Replaces every setting at once.
    pub fn config(mut self, config: BusConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes settings in place: `.configure(|c| c.request_timeout = Duration::from_secs(1))`.
    pub fn configure(mut self, f: impl FnOnce(&mut BusConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Builds the bus. Fails on an invalid namespace or instance name.
    pub fn build(self) -> Result<Bus> {
        let config = self.config;
        if let Some(ns) = &config.namespace {
            validate_channel(ns).map_err(|source| Error::Channel {
                event: "the bus namespace",
                source,
            })?;
        }
        validate_channel(&config.instance).map_err(|source| Error::Channel {
            event: "the bus instance name",
            source,
        })?;
        let memory = self.transport.is_none();
        let transport = self
            .transport
            .unwrap_or_else(|| Arc::new(MemoryTransport::new()));
        let record = config
            .record_published
            .unwrap_or(memory || transport.name() == "memory");
        let prefix = config
            .namespace
            .as_ref()
            .map(|ns| format!("{ns}."))
            .unwrap_or_default();
        Ok(Bus {
            inner: Arc::new(Inner {
                transport,
                prefix,
                state: self.state,
                stats: Arc::new(Stats::default()),
                recorder: record.then(|| Mutex::new(VecDeque::new())),
                shutdown: CancellationToken::new(),
                closed: CancellationToken::new(),
                tasks: TaskTracker::new(),
                in_flight: Activity::new(),
                replies: tokio::sync::OnceCell::new(),
                started: AtomicBool::new(false),
                consumers: Default::default(),
                config,
            }),
        })
    }
}

/// Options of one publish: correlation, causation, headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// The conversation this event belongs to (default: none, the event starts one).
    pub correlation_id: Option<String>,
    /// The event that caused this one.
    pub causation_id: Option<String>,
    /// Free headers, sent as CloudEvents extension attributes (lowercase names).
    pub headers: BTreeMap<String, String>,
    pub(crate) reply_to: Option<String>,
}

impl PublishOptions {
    /// Sets a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

/// A message received by a pattern subscription: its concrete channel, attributes and raw
/// payload, to be parsed with [`PatternMessage::json`].
#[derive(Clone, Debug)]
pub struct PatternMessage {
    /// The handler context (channel, metadata, publish).
    pub ctx: crate::Context,
    /// The payload JSON.
    pub data: Bytes,
}

impl PatternMessage {
    /// The concrete channel the message was published on.
    pub fn channel(&self) -> &str {
        self.ctx.channel()
    }

    /// Parses the payload.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::DecodeError> {
        serde_json::from_slice(&self.data)
            .map_err(|e| crate::DecodeError::new(self.ctx.channel(), e, &self.data))
    }
}

/// A running handler started with [`Bus::subscribe`]. Dropping it leaves the handler running;
/// [`SubscriptionHandle::unsubscribe`] stops it after its in-flight calls finish.
#[derive(Debug)]
pub struct SubscriptionHandle {
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl SubscriptionHandle {
    /// Stops reading, finishes in-flight handler calls, acks, and returns.
    pub async fn unsubscribe(self) {
        self.cancel.cancel();
        let _ = self.done.await;
    }
}

/// A message bus: publish typed events, run handlers. Cheap to clone (an `Arc` inside).
///
/// `Bus::memory()` is an in-process bus, the default for tests and embedded use; a bus over Redis
/// comes from `eventbus-redis` (or `Bus::from_env()` of the `eventbus` crate, which picks Redis
/// when `REDIS_URL` is set). The API is the same.
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) config: BusConfig,
    pub(crate) prefix: String,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) stats: Arc<Stats>,
    recorder: Option<Mutex<VecDeque<Recorded>>>,
    /// Cancelled when the bus starts shutting down: handlers stop reading.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled once every handler finished: publishing is refused from then on, and the reply
    /// router stops. In-flight handlers can still publish and request while the bus drains.
    pub(crate) closed: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) in_flight: Activity,
    pub(crate) replies: tokio::sync::OnceCell<ReplyRouter>,
    started: AtomicBool,
    pub(crate) consumers: crate::consumers::Consumers,
}

/// The most published events [`Bus::published`] remembers; older ones are forgotten.
pub const RECORD_LIMIT: usize = 100_000;

struct Recorded {
    rust_type: &'static str,
    meta: Metadata,
    data: Bytes,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("transport", &self.inner.transport.name())
            .field("namespace", &self.inner.config.namespace)
            .field("instance", &self.inner.config.instance)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// An in-process bus on a new [`MemoryTransport`].
    pub fn memory() -> Bus {
        Bus::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder with default settings and the memory transport.
    pub fn builder() -> BusBuilder {
        BusBuilder {
            transport: None,
            config: BusConfig::default(),
            state: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    /// Counters of published, handled, failed, retried, dead-lettered and dropped messages.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The shared counters (for transports built on this bus's stats).
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// The physical key of a channel: the namespace prefix plus the channel.
    pub fn key(&self, channel: &str) -> String {
        let mut key = String::with_capacity(self.inner.prefix.len() + channel.len());
        key.push_str(&self.inner.prefix);
        key.push_str(channel);
        key
    }

    /// The stream key (durable) or channel (ephemeral, untemplated) of an event type, with the
    /// namespace.
    pub fn channel_of<E: Event>(&self) -> String {
        self.key(E::DESCRIPTOR.channel)
    }

    /// The dead-letter stream of an event type: `<stream>.dlq` for durable types,
    /// `<name>.dlq` for ephemeral ones.
    pub fn dead_letter_key_of<E: Event>(&self) -> String {
        dead_letter_key(&self.inner.prefix, &E::DESCRIPTOR)
    }

    /// The application state of type `T` given to [`BusBuilder::state`].
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&T> {
        self.inner
            .state
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .ok_or_else(|| {
                Error::Config(format!(
                    "no state of type {} was given to the bus; add it with Bus::builder().state(value)",
                    std::any::type_name::<T>()
                ))
            })
    }

    pub(crate) fn metadata_for<E: Event>(&self, opts: &PublishOptions) -> Metadata {
        let mut id = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id);
        Metadata {
            id: (*id).to_owned(),
            source: self.inner.config.source.clone(),
            event_type: E::DESCRIPTOR.name.to_owned(),
            time: Some(rfc3339(SystemTime::now())),
            data_content_type: None,
            data_version: Some(E::DESCRIPTOR.version),
            correlation_id: opts.correlation_id.clone(),
            causation_id: opts.causation_id.clone(),
            reply_to: opts.reply_to.clone(),
            headers: opts.headers.clone(),
        }
    }

    pub(crate) fn outgoing<E: Event>(&self, event: &E, opts: &PublishOptions) -> Result<Outgoing> {
        let channel = event.channel();
        if E::DESCRIPTOR.is_templated() {
            validate_template_value(&channel).map_err(|source| Error::Channel {
                event: E::DESCRIPTOR.rust_type,
                source,
            })?;
        }
        let physical = self.key(&channel);
        let message =
            Encoded::new(self.metadata_for::<E>(opts), event).map_err(|source| Error::Encode {
                event: E::DESCRIPTOR.rust_type,
                source,
            })?;
        if message.data_len() > self.inner.config.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                channel: physical,
                size: message.data_len(),
                limit: self.inner.config.max_payload_bytes,
            });
        }
        let max_len = match E::DESCRIPTOR.durability {
            Durability::Durable => E::DESCRIPTOR.max_len.or(self.inner.config.default_max_len),
            Durability::Ephemeral => None,
        };
        Ok(Outgoing {
            channel: physical,
            durability: E::DESCRIPTOR.durability,
            max_len,
            message,
        })
    }

    fn record(&self, rust_type: &'static str, out: &Outgoing) {
        if let Some(rec) = &self.inner.recorder {
            let mut rec = rec.lock().unwrap_or_else(|e| e.into_inner());
            if rec.len() == RECORD_LIMIT {
                // An embedded bus that runs for long must not grow without bound.
                rec.pop_front();
            }
            rec.push_back(Recorded {
                rust_type,
                meta: out.message.meta().clone(),
                data: out.message.data(),
            });
        }
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
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let out = self.outgoing(event, &options)?;
        self.record(E::DESCRIPTOR.rust_type, &out);
        let receipt = self.inner.transport.publish(out).await?;
        Stats::incr(&self.inner.stats.published);
        tracing::trace!(event = E::DESCRIPTOR.name, channel = %receipt.channel, id = %receipt.event_id, "published");
        Ok(receipt)
    }

    /// Publishes several events of one type in one batch (pipelined on Redis).
    pub async fn publish_all<E: Event>(&self, events: &[E]) -> Result<Vec<Receipt>> {
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let opts = PublishOptions::default();
        let outs = events
            .iter()
            .map(|e| self.outgoing(e, &opts))
            .collect::<Result<Vec<_>>>()?;
        for out in &outs {
            self.record(E::DESCRIPTOR.rust_type, out);
        }
        let receipts = self.inner.transport.publish_all(outs).await?;
        Stats::add(&self.inner.stats.published, receipts.len() as u64);
        Ok(receipts)
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
        self.subscribe_with(HandlerOptions::DEFAULT, handler).await
    }

    /// Like [`Bus::subscribe`] with options (group, concurrency, retries, broadcast, dedup).
    ///
    /// Fails with [`Error::Config`] for [`HandlerOptions::dedup`] on an ephemeral event or
    /// together with `broadcast`, and with the transport's error when it cannot keep dedup marks.
    pub async fn subscribe_with<E, H, Args>(
        &self,
        options: HandlerOptions,
        handler: H,
    ) -> Result<SubscriptionHandle>
    where
        E: Event,
        H: Handler<E, Args>,
        Args: 'static,
    {
        let name: Arc<str> = Arc::from(std::any::type_name::<H>());
        self.start(
            name,
            E::DESCRIPTOR,
            options,
            handler::erase::<E, H, Args>(handler),
        )
        .await
    }

    /// Subscribes a raw handler to every pub/sub channel matching a Redis glob pattern
    /// (`*`, `?`, `[..]`), whatever the event type. The handler gets the concrete channel.
    ///
    /// ```
    /// # use eventbus_core::prelude::*;
    /// # use eventbus_core::PatternMessage;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
    /// let bus = Bus::memory();
    /// bus.subscribe_pattern("tenant.*.presence", |msg: PatternMessage| async move {
    ///     let body: serde_json::Value = msg.json()?;
    ///     println!("{} -> {body}", msg.channel());
    ///     Ok::<_, HandlerError>(())
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
        Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        if pattern.is_empty() || pattern.chars().any(char::is_whitespace) {
            return Err(Error::Config(format!(
                "invalid pattern {pattern:?}: it must be non-empty and without whitespace"
            )));
        }
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |data, ctx| {
            let fut = handler(PatternMessage { ctx, data });
            Box::pin(async move {
                fut.await
                    .map(|()| None)
                    .map_err(handler::HandlerFailure::Failed)
            })
        });
        let target = Target::Pattern(self.key(pattern));
        let runner = Runner::new(
            self.clone(),
            Arc::from(format!("pattern {pattern}")),
            None,
            HandlerOptions::DEFAULT,
            erased,
            String::new(),
            format!("{}eventbus.patterns.dlq", self.inner.prefix),
        );
        self.spawn_pubsub(runner, target).await
    }

    pub(crate) async fn start(
        &self,
        name: Arc<str>,
        event: EventDescriptor,
        options: HandlerOptions,
        handler: ErasedHandler,
    ) -> Result<SubscriptionHandle> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::Closed);
        }
        crate::dedup::check_options(&name, &event, &options)?;
        let group = options
            .group
            .map_or_else(|| name.to_string(), str::to_owned);
        if options.dedup.is_some() {
            let probe = crate::dedup::key(&self.inner.prefix, event.channel, &group, "");
            crate::dedup::probe(self, &probe).await?;
        }
        let dlq = dead_letter_key(&self.inner.prefix, &event);
        let runner = Runner::new(
            self.clone(),
            name,
            Some(event),
            options,
            handler,
            group,
            dlq,
        );
        match event.durability {
            Durability::Ephemeral => {
                let target = if event.is_templated() {
                    Target::Pattern(self.key(event.pattern))
                } else {
                    Target::Channel(self.key(event.channel))
                };
                self.spawn_pubsub(runner, target).await
            }
            Durability::Durable => {
                let spec = ConsumerSpec {
                    stream: self.key(event.channel),
                    group: runner.group.clone(),
                    consumer: crate::consumers::consumer_name(self, options.mode).await,
                    mode: options.mode,
                    start: self.inner.config.start_from,
                    claim_idle: self.inner.config.claim_idle,
                    stats: self.inner.stats.clone(),
                };
                let consumer = self.inner.transport.consume(spec).await?;
                self.inner
                    .consumers
                    .started(self.key(event.channel), &runner.group, options.mode);
                tracing::debug!(handler = %runner.name, stream = %self.key(event.channel), group = %runner.group, mode = ?options.mode, "stream consumer started");
                Ok(self.spawn(runner, |r| dispatch::run_stream(r, consumer)))
            }
        }
    }

    async fn spawn_pubsub(&self, runner: Runner, target: Target) -> Result<SubscriptionHandle> {
        let sub = self
            .inner
            .transport
            .subscribe(SubscribeSpec {
                target: target.clone(),
                capacity: self.inner.config.subscriber_capacity,
                capacity_bytes: self.inner.config.subscriber_capacity_bytes,
                stats: self.inner.stats.clone(),
            })
            .await?;
        tracing::debug!(handler = %runner.name, target = ?target, "pub/sub subscription started");
        Ok(self.spawn(runner, |r| dispatch::run_pubsub(r, sub)))
    }

    fn spawn<F, Fut>(&self, runner: Runner, run: F) -> SubscriptionHandle
    where
        F: FnOnce(Runner) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = runner.cancel.clone();
        let done = self.inner.tasks.spawn(run(runner));
        SubscriptionHandle { cancel, done }
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
    pub async fn request<Q: crate::Request>(&self, request: &Q) -> Result<Q::Reply> {
        self.request_timeout(request, self.inner.config.request_timeout)
            .await
    }

    /// [`Bus::request`] with an explicit timeout.
    pub async fn request_timeout<Q: crate::Request>(
        &self,
        request: &Q,
        timeout: Duration,
    ) -> Result<Q::Reply> {
        crate::reply::request(self, request, timeout).await
    }

    /// Starts every `#[handler]` linked into this binary, then runs until Ctrl-C or
    /// [`Bus::shutdown`]; then stops reading, lets in-flight handlers finish, acks and closes.
    ///
    /// Fails at start when two event types map to one channel (naming both), or when no handler
    /// is linked at all. Logs how many handlers it found per event type: a handler crate that
    /// the binary never references is not linked (add `use my_handlers as _;`).
    pub async fn run_registered_handlers(&self) -> Result<()> {
        self.start_registered_handlers().await?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if let Err(e) = r {
                    tracing::warn!("cannot listen for Ctrl-C ({e}); waiting for Bus::shutdown");
                    self.inner.shutdown.cancelled().await;
                } else {
                    tracing::info!("Ctrl-C: shutting down");
                }
            }
            () = self.inner.shutdown.cancelled() => {}
        }
        self.shutdown().await;
        Ok(())
    }

    /// Starts every `#[handler]` linked into this binary and returns how many were started,
    /// without waiting. [`Bus::run_registered_handlers`] is this plus waiting for shutdown.
    pub async fn start_registered_handlers(&self) -> Result<usize> {
        let topology = crate::topology::Topology::from_registry();
        topology.check_channels()?;
        let handlers = crate::handler::registered_handlers();
        if handlers.is_empty() {
            return Err(Error::Config(
                "no #[handler] is linked into this binary: a crate whose handlers are never \
                 referenced is not linked; add `use that_crate as _;` to main.rs"
                    .to_owned(),
            ));
        }
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Err(Error::Config(
                "the registered handlers of this bus are already started".to_owned(),
            ));
        }
        for event in &topology.events {
            let n = handlers
                .iter()
                .filter(|h| h.event.rust_type == event.rust_type)
                .count();
            tracing::info!(event = event.rust_type, channel = %self.key(event.channel), durability = %event.durability, handlers = n, "event type");
        }
        for reg in &handlers {
            self.start(Arc::from(reg.name), reg.event, reg.options, (reg.make)())
                .await?;
        }
        tracing::info!(
            handlers = handlers.len(),
            transport = self.inner.transport.name(),
            "registered handlers started"
        );
        Ok(handlers.len())
    }

    /// Stops every handler of this bus: stop reading, finish in-flight handler calls, ack, close
    /// the transport. Returns when all of that is done; publishing afterwards fails with
    /// [`Error::Closed`].
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        crate::consumers::release(self).await;
        // Only now: handlers that were finishing could still publish follow-ups and requests.
        self.inner.closed.cancel();
        self.inner.transport.close().await;
    }

    /// A token cancelled when the bus shuts down; cancel it to trigger a shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Every event of type `E` published through this bus, decoded again from what was sent
    /// (so a type that does not survive JSON fails here). Recording is on for the memory
    /// transport and keeps the last [`RECORD_LIMIT`](crate::RECORD_LIMIT) events; see [`BusConfig::record_published`].
    ///
    /// # Panics
    ///
    /// When recording is off, or an event does not decode back into `E`: this is a test helper.
    pub fn published<E: Event>(&self) -> Vec<E> {
        self.recorded::<E, _>(|r| {
            serde_json::from_slice(&r.data).unwrap_or_else(|e| {
                panic!(
                    "a published {} does not decode back into its type ({e}); payload: {}",
                    E::DESCRIPTOR.rust_type,
                    String::from_utf8_lossy(&r.data)
                )
            })
        })
    }

    /// The envelopes (attributes) of every published event of type `E`, in order.
    pub fn published_envelopes<E: Event>(&self) -> Vec<Metadata> {
        self.recorded::<E, _>(|r| r.meta.clone())
    }

    /// Forgets what was recorded as published.
    pub fn clear_published(&self) {
        if let Some(rec) = &self.inner.recorder {
            rec.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    fn recorded<E: Event, T>(&self, f: impl Fn(&Recorded) -> T) -> Vec<T> {
        let rec = self.inner.recorder.as_ref().unwrap_or_else(|| {
            panic!("this bus does not record published events; build it with configure(|c| c.record_published = Some(true))")
        });
        rec.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.rust_type == E::DESCRIPTOR.rust_type)
            .map(f)
            .collect()
    }

    /// Calls the registered `#[handler]` named `name` (its fn name or full path) once with
    /// `event`, through the codec, as if the event had arrived. Returns its reply.
    pub async fn call_handler<E: Event>(&self, name: &str, event: &E) -> Result<E::Reply> {
        let suffix = format!("::{name}");
        let found: Vec<_> = crate::handler::registered_handlers()
            .into_iter()
            .filter(|h| h.event.rust_type == E::DESCRIPTOR.rust_type)
            .filter(|h| h.name == name || h.name.ends_with(&suffix))
            .collect();
        let reg = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::Config(format!(
                    "no registered handler of {} is named {name:?}",
                    E::DESCRIPTOR.rust_type
                )));
            }
            many => {
                return Err(Error::Config(format!(
                    "{name:?} names several handlers of {}: {}",
                    E::DESCRIPTOR.rust_type,
                    many.iter().map(|h| h.name).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        let mut opts = PublishOptions {
            reply_to: Some("call_handler".to_owned()),
            ..PublishOptions::default()
        };
        let out = self.outgoing(event, &opts)?;
        opts.reply_to = None;
        let ctx = crate::Context::new(
            self.clone(),
            out.message.meta().clone(),
            out.channel.clone(),
            1,
            None,
            Arc::from(reg.name),
        );
        let remote = |message: String| Error::Remote {
            event: E::DESCRIPTOR.rust_type,
            message,
        };
        match (reg.make)()(out.message.data(), ctx).await {
            Ok(reply) => {
                let reply = reply.unwrap_or_else(|| Bytes::from_static(b"null"));
                serde_json::from_slice(&reply)
                    .map_err(|e| Error::Decode(crate::DecodeError::new(&out.channel, e, &reply)))
            }
            Err(handler::HandlerFailure::Undecodable(e)) => Err(Error::Decode(e)),
            Err(handler::HandlerFailure::Failed(e)) => Err(remote(e.to_string())),
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
    /// After [`BusConfig::settle_timeout`] (30 s) with work still outstanding: this is a test
    /// helper, and a test that never settles is a failing test.
    pub async fn settle(&self) {
        if let Err(e) = self.try_settle(self.inner.config.settle_timeout).await {
            panic!("{e}");
        }
    }

    /// [`Bus::settle`] with a timeout and an error instead of a panic.
    pub async fn try_settle(&self, timeout: Duration) -> Result<()> {
        let activity = self.inner.transport.activity();
        let idle =
            || activity.as_ref().is_none_or(|a| a.get() == 0) && self.inner.in_flight.get() == 0;
        let wait = async {
            loop {
                if idle() {
                    // Give tasks that were just woken a chance to take the next message.
                    tokio::task::yield_now().await;
                    if idle() && crate::consumers::backlog_drained(self).await && idle() {
                        return;
                    }
                }
                let transport_idle = async {
                    if let Some(a) = &activity {
                        a.idle().await;
                    }
                };
                tokio::join!(transport_idle, self.inner.in_flight.idle());
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            Error::Config(format!(
                "the bus did not settle within {timeout:?}: {} messages queued or pending in the transport, {} handler calls in flight, {} entries unread or pending in its consumer groups",
                activity.as_ref().map_or(0, Activity::get),
                self.inner.in_flight.get(),
                self.inner.consumers.last_backlog()
            ))
        })
    }
}

pub(crate) fn dead_letter_key(prefix: &str, event: &EventDescriptor) -> String {
    match event.durability {
        Durability::Durable => format!("{prefix}{}.dlq", event.channel),
        Durability::Ephemeral => format!("{prefix}{}.dlq", event.name),
    }
}

impl ConsumeMode {
    /// `group` or `broadcast`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumeMode::Group => "group",
            ConsumeMode::Broadcast => "broadcast",
        }
    }
}
