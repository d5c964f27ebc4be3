//! The state a bus shares with its handlers: transport, settings, counters, application state,
//! what was recorded for tests, and the lifecycle tokens.
//!
//! Every message the bus sends goes through two steps here, whichever path it comes from
//! (`publish`, `publish_all`, `ctx.publish`, requests, replies): [`Engine::encode`] (or
//! [`Engine::encode_data`] for a payload that is already JSON) builds the envelope, and
//! [`Engine::send`] hands it to the transport, records it and counts it. The public
//! [`Bus`](crate::Bus) is a thin handle over an `Arc<Engine>`; the dispatcher, contexts,
//! requests and replies hold the engine, never the `Bus`.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::activity::Activity;
use crate::channel::validate_template_value;
use crate::config::BusConfig;
use crate::consumers::Consumers;
use crate::envelope::{Encoded, Metadata, rfc3339};
use crate::error::{Error, Result};
use crate::event::{Durability, Event, EventDescriptor};
use crate::reply::ReplyRouter;
use crate::stats::Stats;
use crate::transport::{Outgoing, Receipt, Transport};

/// The most published events and handler calls a recording bus remembers; older ones are
/// forgotten, so an embedded bus that runs for long stays bounded.
pub const RECORD_LIMIT: usize = 100_000;

/// Application state given to the builder, one value per type.
pub(crate) type StateMap = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// Options of one publish: event id, correlation, causation, headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// The CloudEvents `id` of the event (default: a new UUIDv7 for every publish). Set it to
    /// publish again an event whose first publish failed with
    /// [`Error::PublishOutcomeUnknown`]: `dedup` handlers skip the copy their group handled
    /// already. Must not be empty.
    pub event_id: Option<String>,
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

    /// Sets the event id, to publish again an event whose outcome is unknown under the id it
    /// had (see [`Error::PublishOutcomeUnknown`]).
    ///
    /// ```
    /// # use eventbus_core::prelude::*;
    /// # use eventbus_core::PublishOptions;
    /// # #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    /// # #[event(name = "shop.OrderPlaced")]
    /// # pub struct OrderPlaced { id: u64 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> eventbus_core::Result<()> {
    /// let bus = Bus::memory();
    /// let receipt = bus
    ///     .publish_with(&OrderPlaced { id: 7 }, PublishOptions::default().event_id("order-7"))
    ///     .await?;
    /// assert_eq!(receipt.event_id, "order-7");
    /// # Ok(()) }
    /// ```
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }
}

/// A message the bus sent, kept for test assertions.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub(crate) rust_type: &'static str,
    pub(crate) meta: Metadata,
    pub(crate) data: Bytes,
}

/// A handler call, kept for test assertions.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) rust_type: &'static str,
    pub(crate) handler: Arc<str>,
    pub(crate) meta: Metadata,
    pub(crate) data: Bytes,
    pub(crate) attempt: u32,
    pub(crate) outcome: CallOutcome,
}

/// How a recorded handler call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Handled,
    Failed(String),
}

#[derive(Default)]
struct Recorder {
    sent: VecDeque<Sent>,
    calls: VecDeque<Call>,
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == RECORD_LIMIT {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// See the [module documentation](self).
pub(crate) struct Engine {
    transport: Arc<dyn Transport>,
    config: BusConfig,
    /// `config.source`, shared by the metadata of every message sent.
    source: Arc<str>,
    prefix: String,
    state: StateMap,
    stats: Arc<Stats>,
    recorder: Option<Mutex<Recorder>>,
    /// Cancelled when the bus starts shutting down: handlers stop reading.
    shutdown: CancellationToken,
    /// Cancelled once every handler finished: publishing is refused from then on, and the reply
    /// router stops. In-flight handlers can still publish and request while the bus drains.
    closed: CancellationToken,
    tasks: TaskTracker,
    in_flight: Activity,
    replies: tokio::sync::OnceCell<ReplyRouter>,
    started: AtomicBool,
    consumers: Consumers,
}

impl Engine {
    pub(crate) fn new(
        transport: Arc<dyn Transport>,
        config: BusConfig,
        state: StateMap,
        record: bool,
    ) -> Self {
        let prefix = config
            .namespace
            .as_ref()
            .map(|ns| format!("{ns}."))
            .unwrap_or_default();
        let stats = Arc::new(Stats::default());
        transport.count_in(&stats);
        Engine {
            transport,
            source: Arc::from(config.source.as_str()),
            prefix,
            state,
            stats,
            recorder: record.then(|| Mutex::new(Recorder::default())),
            shutdown: CancellationToken::new(),
            closed: CancellationToken::new(),
            tasks: TaskTracker::new(),
            in_flight: Activity::new(),
            replies: tokio::sync::OnceCell::new(),
            started: AtomicBool::new(false),
            consumers: Consumers::default(),
            config,
        }
    }

    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    pub(crate) fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The namespace prefix of every key, with its trailing dot (`staging.`), or empty.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Handler calls running in this process, for `settle`.
    pub(crate) fn in_flight(&self) -> &Activity {
        &self.in_flight
    }

    /// The tasks of running handlers, waited for on shutdown.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn closed_token(&self) -> &CancellationToken {
        &self.closed
    }

    /// The bus's consumer name and the consumer groups it runs.
    pub(crate) fn consumers(&self) -> &Consumers {
        &self.consumers
    }

    pub(crate) fn replies(&self) -> &tokio::sync::OnceCell<ReplyRouter> {
        &self.replies
    }

    /// Marks the registered handlers as started; false when they were already.
    pub(crate) fn mark_started(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    /// The physical key of a channel: the namespace prefix plus the channel.
    pub(crate) fn key(&self, channel: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + channel.len());
        key.push_str(&self.prefix);
        key.push_str(channel);
        key
    }

    /// The dead-letter stream of an event type: `<stream>.dlq` for durable types, `<channel>.dlq`
    /// for ephemeral ones, a templated channel written as its pattern (`tenant.*.presence.dlq`):
    /// never the Rust type path, which moves on a module rename.
    pub(crate) fn dead_letter_key(&self, event: &EventDescriptor) -> String {
        match event.durability {
            Durability::Durable => format!("{}{}.dlq", self.prefix, event.channel),
            Durability::Ephemeral => format!("{}{}.dlq", self.prefix, event.pattern),
        }
    }

    /// The application state of type `T`.
    pub(crate) fn state<T: Send + Sync + 'static>(&self) -> Result<&T> {
        self.state
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .ok_or_else(|| Error::MissingState {
                handler: None,
                type_name: std::any::type_name::<T>(),
                given_instead: None,
            })
    }

    /// Every value of the application state, for `State<T>` arguments and their check.
    pub(crate) fn state_map(&self) -> &StateMap {
        &self.state
    }

    /// The attributes of a new message of CloudEvents type `event_type`.
    pub(crate) fn metadata(
        &self,
        event_type: &'static str,
        version: Option<u32>,
        opts: &PublishOptions,
    ) -> Metadata {
        let id = match &opts.event_id {
            Some(id) => id.clone(),
            None => {
                let mut id = uuid::Uuid::encode_buffer();
                (*uuid::Uuid::now_v7().hyphenated().encode_lower(&mut id)).to_owned()
            }
        };
        Metadata {
            id,
            source: self.source.clone(),
            event_type: Cow::Borrowed(event_type),
            time: Some(rfc3339(SystemTime::now())),
            data_content_type: None,
            data_version: version,
            correlation_id: opts.correlation_id.clone(),
            causation_id: opts.causation_id.clone(),
            reply_to: opts.reply_to.clone(),
            headers: opts.headers.clone(),
        }
    }

    /// The encode step of a typed event: channel (template filled and checked), envelope,
    /// payload, size limit, stream length.
    pub(crate) fn encode<E: Event>(&self, event: &E, opts: &PublishOptions) -> Result<Outgoing> {
        let channel = event.channel();
        if E::DESCRIPTOR.is_templated() {
            validate_template_value(&channel).map_err(|source| Error::Channel {
                event: E::DESCRIPTOR.rust_type,
                source,
            })?;
        }
        if opts.event_id.as_deref().is_some_and(str::is_empty) {
            return Err(Error::InvalidEventId {
                event: E::DESCRIPTOR.rust_type,
                reason: "an event id must not be empty (CloudEvents `id`)",
            });
        }
        let physical = self.key(&channel);
        let meta = self.metadata(E::DESCRIPTOR.name, Some(E::DESCRIPTOR.version), opts);
        let message = Encoded::new(meta, event).map_err(|source| Error::Encode {
            event: E::DESCRIPTOR.rust_type,
            source,
        })?;
        self.check_size(&physical, &message)?;
        let max_len = match E::DESCRIPTOR.durability {
            Durability::Durable => E::DESCRIPTOR.max_len.or(self.config.default_max_len),
            Durability::Ephemeral => None,
        };
        Ok(Outgoing {
            channel: physical,
            durability: E::DESCRIPTOR.durability,
            max_len,
            message,
        })
    }

    /// The encode step of a payload that is JSON already (a reply), for a physical channel.
    pub(crate) fn encode_data(
        &self,
        channel: String,
        durability: Durability,
        meta: Metadata,
        data: &[u8],
    ) -> Result<Outgoing> {
        let message = Encoded::from_data(meta, data);
        self.check_size(&channel, &message)?;
        Ok(Outgoing {
            channel,
            durability,
            max_len: None,
            message,
        })
    }

    fn check_size(&self, channel: &str, message: &Encoded) -> Result<()> {
        let limit = self.config.max_payload_bytes;
        if message.data_len() > limit {
            return Err(Error::PayloadTooLarge {
                channel: channel.to_owned(),
                size: message.data_len(),
                limit,
            });
        }
        Ok(())
    }

    /// The send step: refuses once the bus is closed, records the message for tests, hands it
    /// to the transport and counts it. `rust_type` names what is sent in the record.
    pub(crate) async fn send(&self, rust_type: &'static str, out: Outgoing) -> Result<Receipt> {
        if self.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        self.record_sent(rust_type, &out);
        let receipt = self.transport.publish(out).await?;
        Stats::incr(&self.stats.published);
        tracing::trace!(event = rust_type, channel = %receipt.channel, id = %receipt.event_id, "published");
        Ok(receipt)
    }

    /// The send step for a batch (pipelined where the transport can).
    pub(crate) async fn send_all(
        &self,
        rust_type: &'static str,
        outs: Vec<Outgoing>,
    ) -> Result<Vec<Receipt>> {
        if self.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        for out in &outs {
            self.record_sent(rust_type, out);
        }
        let receipts = self.transport.publish_all(outs).await?;
        Stats::add(&self.stats.published, receipts.len() as u64);
        Ok(receipts)
    }

    fn record_sent(&self, rust_type: &'static str, out: &Outgoing) {
        if let Some(rec) = &self.recorder {
            let sent = Sent {
                rust_type,
                meta: out.message.meta().clone(),
                data: out.message.data(),
            };
            push_bounded(&mut lock(rec).sent, sent);
        }
    }

    pub(crate) fn record_call(&self, call: impl FnOnce() -> Call) {
        if let Some(rec) = &self.recorder {
            push_bounded(&mut lock(rec).calls, call());
        }
    }

    /// What was sent with `rust_type`, oldest first; `None` when recording is off.
    pub(crate) fn sent(&self, rust_type: &str) -> Option<Vec<Sent>> {
        let rec = self.recorder.as_ref()?;
        Some(
            lock(rec)
                .sent
                .iter()
                .filter(|s| s.rust_type == rust_type)
                .cloned()
                .collect(),
        )
    }

    /// The handler calls of events of `rust_type`, oldest first; `None` when recording is off.
    pub(crate) fn calls(&self, rust_type: &str) -> Option<Vec<Call>> {
        let rec = self.recorder.as_ref()?;
        Some(
            lock(rec)
                .calls
                .iter()
                .filter(|c| c.rust_type == rust_type)
                .cloned()
                .collect(),
        )
    }

    /// Forgets what was recorded.
    pub(crate) fn clear_records(&self) {
        if let Some(rec) = &self.recorder {
            let mut rec = lock(rec);
            rec.sent.clear();
            rec.calls.clear();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
