//! What a handler knows about the message it handles, and how it publishes follow-ups.

use std::sync::Arc;

use crate::engine::{Engine, PublishOptions};
use crate::envelope::Metadata;
use crate::error::Result;
use crate::event::{Event, Request};
use crate::transport::Receipt;

/// The handler's view of the current message: its metadata, the delivery attempt, and the bus
/// to publish follow-up events on (correlation carried over). A handler takes it as an argument
/// after the event; application state comes as a separate [`State<T>`](crate::State) argument.
///
/// ```
/// use eventbus_core::prelude::*;
///
/// #[derive(Event, Serialize, Deserialize, Debug, Clone)]
/// pub struct OrderCreated { pub order_id: String }
/// #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
/// pub struct PaymentRequested { pub order_id: String }
///
/// struct Db { name: &'static str }
///
/// async fn charge(ev: OrderCreated, ctx: Context, db: State<Db>) -> Result<(), HandlerError> {
///     assert_eq!(db.name, "orders");
///     // The follow-up carries this event's correlation id, and this event's id as causation.
///     ctx.publish(&PaymentRequested { order_id: ev.order_id }).await?;
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eventbus_core::Result<()> {
/// let bus = Bus::builder().state(Db { name: "orders" }).build()?;
/// bus.subscribe(charge).await?;
/// let receipt = bus.publish(&OrderCreated { order_id: "o-1".into() }).await?;
/// eventbus_core::testing::settle(&bus).await;
/// let follow_up = &eventbus_core::testing::published_envelopes::<PaymentRequested>(&bus).await[0];
/// assert_eq!(follow_up.correlation_id(), Some(receipt.event_id.as_str()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    meta: Metadata,
    channel: String,
    attempt: u32,
    entry_id: Option<String>,
    handler: Arc<str>,
}

impl Context {
    pub(crate) fn new(
        engine: Arc<Engine>,
        meta: Metadata,
        channel: String,
        attempt: u32,
        entry_id: Option<String>,
        handler: Arc<str>,
    ) -> Self {
        Context {
            inner: Arc::new(Inner {
                engine,
                meta,
                channel,
                attempt,
                entry_id,
                handler,
            }),
        }
    }

    /// The same message at another delivery attempt.
    pub(crate) fn with_attempt(&self, attempt: u32) -> Self {
        let i = &self.inner;
        Context::new(
            i.engine.clone(),
            i.meta.clone(),
            i.channel.clone(),
            attempt,
            i.entry_id.clone(),
            i.handler.clone(),
        )
    }

    /// The event id.
    pub fn id(&self) -> &str {
        &self.inner.meta.id
    }

    /// Every attribute of the message (CloudEvents attributes and headers).
    pub fn metadata(&self) -> &Metadata {
        &self.inner.meta
    }

    /// A free header (CloudEvents extension attribute) of the message.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.meta.headers.get(name).map(String::as_str)
    }

    /// The concrete channel or stream key the message came from (namespace included).
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// The delivery attempt, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The stream entry id, for durable events.
    pub fn entry_id(&self) -> Option<&str> {
        self.inner.entry_id.as_deref()
    }

    /// The name of the handler being run.
    pub fn handler(&self) -> &str {
        &self.inner.handler
    }

    /// The correlation id of the conversation: the message's own, or its id when it starts one.
    pub fn correlation_id(&self) -> &str {
        self.inner
            .meta
            .correlation_id
            .as_deref()
            .unwrap_or(&self.inner.meta.id)
    }

    /// The engine of the bus this handler runs on: where `State<T>` arguments are taken from.
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Publishes a follow-up event: its correlation id is this message's correlation id and its
    /// causation id is this message's id.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Receipt> {
        self.send(event, self.follow_up()).await
    }

    /// Publishes a follow-up event with extra headers.
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<Receipt> {
        let mut opts = self.follow_up();
        opts.headers.extend(options.headers);
        if options.correlation_id.is_some() {
            opts.correlation_id = options.correlation_id;
        }
        self.send(event, opts).await
    }

    /// Sends a request from inside a handler and waits for its typed reply, with the bus's
    /// request timeout. Like [`Bus::request`](crate::Bus::request).
    pub async fn request<Q: Request>(&self, request: &Q) -> Result<Q::Reply> {
        let engine = &self.inner.engine;
        crate::reply::request(engine, request, engine.config().request_timeout).await
    }

    async fn send<E: Event>(&self, event: &E, opts: PublishOptions) -> Result<Receipt> {
        let engine = &self.inner.engine;
        let out = engine.encode(event, &opts)?;
        engine.send(E::DESCRIPTOR.rust_type, out).await
    }

    fn follow_up(&self) -> PublishOptions {
        PublishOptions {
            correlation_id: Some(self.correlation_id().to_owned()),
            causation_id: Some(self.id().to_owned()),
            ..PublishOptions::default()
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.inner.meta.id)
            .field("channel", &self.inner.channel)
            .field("attempt", &self.inner.attempt)
            .field("handler", &self.inner.handler)
            .finish_non_exhaustive()
    }
}
