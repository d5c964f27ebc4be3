//! The object-safe boundary between the bus and a backend (memory, Redis).
//!
//! A transport only moves bytes and acknowledgements: it publishes encoded messages, hands out
//! [`Delivery`]s from pub/sub subscriptions and stream consumers, acks entries and writes dead
//! letters. Everything else (decoding, retries, backoff, concurrency, dead-lettering policy,
//! replies) lives once in the core dispatcher and is shared by every transport.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Durability;
use crate::activity::{Activity, ActivityToken};
use crate::envelope::{Encoded, WireBody};
use crate::error::{Error, Result};
use crate::stats::Stats;

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The physical channel (pub/sub) or stream key, namespace included.
    pub channel: String,
    /// Pub/sub or stream.
    pub durability: Durability,
    /// For streams: the approximate maximum length to keep (`MAXLEN ~ N`).
    pub max_len: Option<u64>,
    /// The encoded message.
    pub message: Encoded,
}

/// How many `claim_idle` periods a transport keeps an entry in flight leased to its consumer
/// (renewed, so that no other consumer claims it from a slow handler). An entry kept longer
/// without an ack (its dead letter could not be written) is delivered again. Every transport
/// uses this one bound.
pub const IN_FLIGHT_LEASE_FACTOR: u32 = 10;

/// What a publish returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The event id (CloudEvents `id`).
    pub event_id: String,
    /// The channel or stream key it went to.
    pub channel: String,
    /// For durable events: the stream entry id Redis assigned (`1700000000000-0`).
    pub stream_id: Option<String>,
    /// For ephemeral events: how many subscribers received it, as `PUBLISH` answers.
    pub receivers: Option<u64>,
}

/// What a pub/sub subscription listens to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// One channel (`SUBSCRIBE`).
    Channel(String),
    /// A glob pattern (`PSUBSCRIBE`).
    Pattern(String),
}

impl Target {
    /// The channel or pattern text.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Channel(c) | Target::Pattern(c) => c,
        }
    }
}

/// A pub/sub subscription request.
#[derive(Clone, Debug)]
pub struct SubscribeSpec {
    /// Channel or pattern.
    pub target: Target,
    /// Messages buffered for a subscriber that is behind; beyond it the oldest are dropped
    /// and counted in `stats.dropped`.
    pub capacity: usize,
    /// Payload bytes buffered for a subscriber that is behind; beyond it the oldest messages
    /// are dropped and counted the same way.
    pub capacity_bytes: usize,
    /// Where drops and reconnects are counted.
    pub stats: Arc<Stats>,
}

/// How a durable consumer reads its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConsumeMode {
    /// Consumer groups: each group gets every entry, consumers within a group compete.
    Group,
    /// Every instance reads every entry from its own position (`XREAD`); nothing is acked.
    Broadcast,
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

/// Where a new consumer group starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest entry still in the stream (`0`): events published before the group first
    /// existed are handled too. The default.
    Beginning,
    /// Only entries added after the group was created (`$`).
    Now,
}

/// A durable consumer request.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// The stream key.
    pub stream: String,
    /// The consumer group (ignored in broadcast mode).
    pub group: String,
    /// This consumer's name: the bus's instance name, held by a lease so that no two live
    /// processes use it at once (see [`Transport::hold_lease`]).
    pub consumer: String,
    /// Group or broadcast.
    pub mode: ConsumeMode,
    /// Where a newly created group starts.
    pub start: StartFrom,
    /// Entries idle this long in another consumer's pending list are claimed by this one.
    pub claim_idle: Duration,
    /// Where reconnects and recreated groups are counted.
    pub stats: Arc<Stats>,
}

/// One message handed to the dispatcher.
#[derive(Debug)]
pub struct Delivery {
    /// The concrete channel or stream key it came from.
    pub channel: String,
    /// The payload as received.
    pub body: WireBody,
    /// The stream entry id (durable only).
    pub entry_id: Option<String>,
    /// How many times this entry was delivered, this time included (1 the first time).
    pub delivery_count: u32,
    /// Keeps the transport's activity count up while the message is being handled.
    pub token: Option<ActivityToken>,
}

/// A live pub/sub subscription.
#[async_trait]
pub trait Subscription: Send {
    /// The next message; `None` once the subscription is closed for good.
    async fn next(&mut self) -> Option<Delivery>;
}

/// A durable consumer of one stream (one group member, or one broadcast reader).
#[async_trait]
pub trait StreamConsumer: Send + Sync {
    /// Waits for entries and returns at most `max`: first this consumer's own pending entries
    /// (after a restart), then entries claimed from idle consumers, then new ones. May return an
    /// empty batch after waiting for a while.
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>>;

    /// Acknowledges handled entries (`XACK`). A no-op in broadcast mode.
    async fn ack(&self, entry_ids: &[String]) -> Result<()>;

    /// The consumer is stopping: a `fetch` in flight should return soon, with what it was
    /// handed already (the dispatcher still handles and acks that), and take nothing new.
    async fn interrupt(&self) {}

    /// Called once the consumer stopped and acked what it handled: it leaves its group when it
    /// owns nothing (Redis: `XGROUP DELCONSUMER` when it has no pending entries).
    async fn leave(&self) {}
}

/// Who holds a lease after [`Transport::hold_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// The caller holds it, until the ttl it asked for.
    Held,
    /// Someone else does.
    HeldBy {
        /// The holder's value.
        holder: String,
        /// Time left before the lease expires unless its holder renews it.
        remaining: Duration,
    },
}

/// Approximate length kept of every dead-letter stream (`MAXLEN ~`), so a flood of poison
/// messages cannot grow it without bound.
pub const DEAD_LETTER_MAX_LEN: u64 = 100_000;

/// A message that could not be handled, written to a dead-letter stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The dead-letter stream key (`<stream>.dlq`).
    pub dlq: String,
    /// The channel or stream the message came from.
    pub channel: String,
    /// Its stream entry id, for durable events.
    pub entry_id: Option<String>,
    /// The handler group that gave up.
    pub group: String,
    /// The handler.
    pub handler: String,
    /// Why: the handler's last error, or the decoding error.
    pub reason: String,
    /// How many deliveries were tried.
    pub deliveries: u32,
    /// The message as received.
    pub body: WireBody,
}

impl DeadLetter {
    /// The fields of the dead-letter stream entry: the reason and origin first, then the
    /// original entry's fields (for a stream message) or its payload as `payload` (pub/sub).
    pub fn to_fields(&self) -> Vec<(Cow<'static, str>, Bytes)> {
        let mut f: Vec<(Cow<'static, str>, Bytes)> = vec![
            ("dlq.reason".into(), Bytes::from(self.reason.clone())),
            ("dlq.channel".into(), Bytes::from(self.channel.clone())),
            ("dlq.group".into(), Bytes::from(self.group.clone())),
            ("dlq.handler".into(), Bytes::from(self.handler.clone())),
            (
                "dlq.deliveries".into(),
                Bytes::from(self.deliveries.to_string()),
            ),
        ];
        if let Some(id) = &self.entry_id {
            f.push(("dlq.entry_id".into(), Bytes::from(id.clone())));
        }
        match &self.body {
            WireBody::Json(b) => f.push(("payload".into(), b.clone())),
            WireBody::Fields(fields) => f.extend(
                fields
                    .iter()
                    .map(|(k, v)| (Cow::Owned(k.clone()), v.clone())),
            ),
        }
        f
    }

    /// Reads a dead letter back from its stream entry fields.
    pub fn from_fields(dlq: &str, fields: Vec<(String, Bytes)>) -> Self {
        let mut letter = DeadLetter {
            dlq: dlq.to_owned(),
            channel: String::new(),
            entry_id: None,
            group: String::new(),
            handler: String::new(),
            reason: String::new(),
            deliveries: 0,
            body: WireBody::Json(Bytes::new()),
        };
        let mut original = Vec::new();
        let text = |v: &Bytes| String::from_utf8_lossy(v).into_owned();
        for (k, v) in fields {
            match k.as_str() {
                "dlq.reason" => letter.reason = text(&v),
                "dlq.channel" => letter.channel = text(&v),
                "dlq.group" => letter.group = text(&v),
                "dlq.handler" => letter.handler = text(&v),
                "dlq.deliveries" => letter.deliveries = text(&v).parse().unwrap_or(0),
                "dlq.entry_id" => letter.entry_id = Some(text(&v)),
                "payload" => letter.body = WireBody::Json(v),
                _ => original.push((k, v)),
            }
        }
        if !original.is_empty() {
            letter.body = WireBody::Fields(original);
        }
        letter
    }
}

/// A dead letter as stored, with its id in the dead-letter stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterEntry {
    /// Entry id in the dead-letter stream.
    pub id: String,
    /// The dead letter.
    pub letter: DeadLetter,
}

/// A backend that moves messages. Implemented by `MemoryTransport` and by `eventbus-redis`.
///
/// The trait is object-safe: the bus holds an `Arc<dyn Transport>`.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// A short name for errors and logs: `memory`, `redis`.
    fn name(&self) -> &'static str;

    /// Where the transport counts what happens to connections no subscription owns (the
    /// `reconnects` of a shared publishing connection). Called by every bus built on it.
    fn count_in(&self, stats: &Arc<Stats>) {
        let _ = stats;
    }

    /// Publishes one message: `PUBLISH` for ephemeral, `XADD` for durable. Returns only after
    /// the backend accepted it.
    async fn publish(&self, message: Outgoing) -> Result<Receipt>;

    /// Publishes several messages, pipelined where the backend can. All or an error.
    async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<Vec<Receipt>> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.publish(m).await?);
        }
        Ok(out)
    }

    /// Subscribes to a pub/sub channel or pattern.
    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn Subscription>>;

    /// Starts a durable consumer (creating the stream and group when missing).
    async fn consume(&self, spec: ConsumerSpec) -> Result<Arc<dyn StreamConsumer>>;

    /// Appends a dead letter to its dead-letter stream.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<()>;

    /// Reads up to `count` dead letters from a dead-letter stream, oldest first.
    async fn dead_letters(&self, dlq: &str, count: usize) -> Result<Vec<DeadLetterEntry>>;

    /// Republishes a dead letter to where it came from and removes it from the dead-letter stream.
    async fn replay_dead_letter(&self, dlq: &str, id: &str) -> Result<Receipt> {
        let _ = (dlq, id);
        Err(Error::transport(
            self.name(),
            "dead-letter replay is not supported",
            None,
        ))
    }

    /// True when the idempotency mark `key` of a `dedup` handler is set and has not expired
    /// (Redis: `EXISTS key`). Keys are built by the dispatcher
    /// (`<namespace.>eventbus.dedup:<channel>:<group>:<event id>`); see
    /// [`HandlerOptions::dedup`](crate::HandlerOptions::dedup).
    ///
    /// The default fails: a transport that cannot keep marks cannot run `dedup` handlers, and
    /// subscribing one fails with this error.
    async fn dedup_seen(&self, key: &str) -> Result<bool> {
        let _ = key;
        Err(Error::transport(
            self.name(),
            "this transport cannot keep the marks of `dedup` handlers",
            None,
        ))
    }

    /// Sets the idempotency mark `key` for `ttl` (Redis: `SET key 1 PX <ttl in ms>`), after
    /// a `dedup` handler succeeded. The default fails, like [`Transport::dedup_seen`].
    async fn dedup_mark(&self, key: &str, ttl: Duration) -> Result<()> {
        let _ = (key, ttl);
        Err(Error::transport(
            self.name(),
            "this transport cannot keep the marks of `dedup` handlers",
            None,
        ))
    }

    /// Takes or renews the lease `key` for `holder` until `ttl` from now: when nobody holds it,
    /// when `holder` holds it, or when `replacing` (a holder known to be dead) holds it
    /// (Redis: a script of `GET` and `SET key holder PX ttl`). Leases keep two live processes
    /// from using one consumer name.
    ///
    /// The default fails: the bus then gives its consumers a name unique to the process.
    async fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        replacing: Option<&str>,
    ) -> Result<LeaseState> {
        let _ = (key, holder, ttl, replacing);
        Err(Error::transport(
            self.name(),
            "this transport cannot hold leases",
            None,
        ))
    }

    /// Ends the lease `key` if `holder` still holds it.
    async fn release_lease(&self, key: &str, holder: &str) -> Result<()> {
        let _ = (key, holder);
        Ok(())
    }

    /// The entries of a consumer group not handled yet: those never delivered (lag) plus
    /// those delivered and not acknowledged (pending), for `Bus::settle` (Redis: `XINFO
    /// GROUPS`). `None` when the transport cannot tell, or counts them in
    /// [`activity`](Transport::activity) already.
    async fn backlog(&self, stream: &str, group: &str) -> Result<Option<u64>> {
        let _ = (stream, group);
        Ok(None)
    }

    /// The count of queued and pending work, for `Bus::settle`. Only in-process transports can
    /// know it; others return `None`.
    fn activity(&self) -> Option<Activity> {
        None
    }

    /// Closes connections. Called once by `Bus::shutdown`.
    async fn close(&self) {}
}
