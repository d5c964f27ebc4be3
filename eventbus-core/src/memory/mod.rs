//! The in-process transport: Redis semantics without Redis.
//!
//! [`MemoryTransport`] is the default transport of [`Bus::memory`](crate::Bus::memory) and the
//! test double of the Redis one. It simulates, in one process:
//!
//! * **pub/sub** for ephemeral events: `PUBLISH` fans a message out to every subscription of the
//!   channel and to every pattern subscription (`PSUBSCRIBE`, Redis glob rules) that matches, at
//!   most once, and answers the receivers as Redis counts them (per connection); nothing is
//!   stored, so a subscriber that is not there misses it. A subscriber that falls behind its
//!   buffer loses the oldest messages, counted in `Stats::dropped`.
//! * **streams with consumer groups** for durable events: `XADD` appends an entry with a
//!   Redis-style id (`<ms>-<seq>`) and trims to `MAXLEN`; each consumer group gets every entry,
//!   the consumers of one group compete for them. An entry handed to a consumer stays in the
//!   group's pending entries list until it is acked; a consumer restarted under the same name
//!   gets its own pending entries again, and entries idle too long in another consumer's list
//!   are claimed (`XAUTOCLAIM`). Delivery is therefore at least once, as with Redis. An entry
//!   being handled is leased to its consumer, as the Redis transport renews its idle time: a
//!   slow handler's entry is not claimed by another consumer.
//! * **broadcast readers** (`XREAD`): every reader sees every entry added after it started.
//! * **dead-letter streams**: ordinary streams (`<stream>.dlq`) that can be listed and replayed.
//! * **the marks of `dedup` handlers**: keys with an expiry, like `SET key 1 PX ttl`.
//!
//! A `MemoryTransport` is a handle. Clones share one store, like several connections to one
//! Redis: several [`Bus`](crate::Bus)es built on clones of one transport behave like several
//! instances of a service. Each clone is a connection of its own: [`Transport::close`] ends the
//! subscriptions and consumers opened through that handle only, and the others go on.
//!
//! The transport also keeps the [`Activity`] count that `Bus::settle` waits on: a pub/sub message
//! counts until its handler finished with it, a stream entry until every group acked it.
//!
//! ```
//! use eventbus_core::MemoryTransport;
//! let redis = MemoryTransport::new();
//! let instance_a = redis.clone();
//! let instance_b = redis.clone();
//! # let _ = (instance_a, instance_b);
//! assert_eq!(redis.stream_len("shop.orders.OrderCreated"), 0);
//! ```

mod consumer;
mod dedup;
mod inspect;
mod lease;
mod pubsub;
mod streams;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

pub use crate::inspect::{ConsumerInfo, GroupInfo, PendingInfo};

use self::consumer::{BroadcastConsumer, GroupConsumer};
use self::pubsub::PubSub;
use self::streams::{EntryId, Fields, Streams};
use crate::Durability;
use crate::activity::Activity;
use crate::envelope::WireBody;
use crate::error::{Error, Result};
use crate::replay::Replay;
use crate::transport::{
    ConsumeMode, ConsumerSpec, DeadLetter, DeadLetterEntry, LeaseState, Outgoing, Receipt,
    StreamConsumer, SubscribeSpec, Subscription, Transport,
};

/// An in-process message store with the semantics of Redis pub/sub and Redis Streams.
/// See the [module documentation](self).
///
/// `Clone` is cheap and gives another connection to the same store.
pub struct MemoryTransport {
    shared: Arc<Shared>,
    conn: Arc<Connection>,
}

/// The store every clone shares.
pub(super) struct Shared {
    pubsub: PubSub,
    streams: Mutex<Streams>,
    activity: Activity,
    ids: AtomicU64,
    /// The marks of `dedup` handlers.
    marks: dedup::Marks,
    /// Leases on consumer names.
    leases: lease::Leases,
}

impl Shared {
    /// A fresh id for a connection or a broadcast reader.
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// One handle's connection state.
pub(super) struct Connection {
    id: u64,
    closed: AtomicBool,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent
/// before it can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryTransport {
    /// A new, empty store and a first connection to it.
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            pubsub: PubSub::default(),
            streams: Mutex::new(Streams::default()),
            activity: Activity::new(),
            ids: AtomicU64::new(1),
            marks: dedup::Marks::default(),
            leases: lease::Leases::default(),
        });
        MemoryTransport::connect(shared)
    }

    fn connect(shared: Arc<Shared>) -> Self {
        let conn = Arc::new(Connection {
            id: shared.next_id(),
            closed: AtomicBool::new(false),
        });
        MemoryTransport { shared, conn }
    }

    fn ensure_open(&self) -> Result<()> {
        if self.conn.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// `XADD` under the stream lock.
    fn append(&self, key: &str, fields: Fields, max_len: Option<u64>) -> EntryId {
        let fields = streams::pack(fields);
        let mut streams = lock(&self.shared.streams);
        streams
            .get_or_create(key)
            .append(fields, max_len, &self.shared.activity)
    }

    /// Adds an entry with exactly these fields to stream `key` (`XADD key * field value ...`),
    /// as a producer that does not use eventbus would write it (`redis-cli XADD`); returns its
    /// entry id.
    pub fn add_entry(&self, key: &str, fields: Vec<(String, bytes::Bytes)>) -> String {
        let fields = fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
        self.append(key, fields, None).text()
    }

    /// Publishes `payload` on `channel` exactly as it is (`PUBLISH channel payload`), as a
    /// producer that does not use eventbus would; returns how many subscribers received it.
    pub fn publish_raw(&self, channel: &str, payload: bytes::Bytes) -> u64 {
        self.shared
            .pubsub
            .publish(channel, &payload, &self.shared.activity)
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        MemoryTransport::new()
    }
}

impl Clone for MemoryTransport {
    /// Another connection to the same store: it shares every channel and stream, and has its
    /// own [`Transport::close`].
    fn clone(&self) -> Self {
        MemoryTransport::connect(self.shared.clone())
    }
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("connection", &self.conn.id)
            .field("closed", &self.conn.is_closed())
            .field("activity", &self.shared.activity.get())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// Fails with [`Error::Closed`] after [`close`](Transport::close) on this handle.
    async fn publish(&self, message: Outgoing) -> Result<Receipt> {
        self.ensure_open()?;
        let Outgoing {
            channel,
            durability,
            max_len,
            message,
        } = message;
        match durability {
            Durability::Ephemeral => {
                let body = message.to_json();
                let n = self
                    .shared
                    .pubsub
                    .publish(&channel, &body, &self.shared.activity);
                Ok(Receipt {
                    event_id: message.meta().id.clone(),
                    channel,
                    stream_id: None,
                    receivers: Some(n),
                })
            }
            Durability::Durable => {
                let id = self.append(&channel, message.to_fields(), max_len);
                Ok(Receipt {
                    event_id: message.meta().id.clone(),
                    channel,
                    stream_id: Some(id.text()),
                    receivers: None,
                })
            }
        }
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(PubSub::subscribe(&self.shared, &self.conn, spec)?))
    }

    /// Group mode creates the group when missing (an existing one is joined as it is); a
    /// broadcast reader starts at the current end of the stream.
    async fn consume(&self, spec: ConsumerSpec) -> Result<Arc<dyn StreamConsumer>> {
        self.ensure_open()?;
        Ok(match spec.mode {
            ConsumeMode::Group => Arc::new(GroupConsumer::join(&self.shared, &self.conn, spec)),
            ConsumeMode::Broadcast => {
                Arc::new(BroadcastConsumer::start(&self.shared, &self.conn, spec))
            }
        })
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<()> {
        self.ensure_open()?;
        self.append(
            &letter.dlq,
            letter.to_fields(),
            Some(crate::transport::DEAD_LETTER_MAX_LEN),
        );
        Ok(())
    }

    async fn dead_letters(&self, dlq: &str, count: usize) -> Result<Vec<DeadLetterEntry>> {
        let streams = lock(&self.shared.streams);
        let Some(stream) = streams.get(dlq) else {
            return Ok(Vec::new());
        };
        Ok(stream
            .entries
            .iter()
            .take(count)
            .map(|e| DeadLetterEntry {
                id: e.id.text(),
                letter: DeadLetter::from_fields(dlq, e.owned_fields()),
            })
            .collect())
    }

    /// A letter from a stream goes back into its stream as a new entry (every group gets it
    /// again); a pub/sub letter is published again on its channel. What goes where, and the
    /// event id of the receipt, follow [`Replay`].
    async fn replay_dead_letter(&self, dlq: &str, id: &str) -> Result<Receipt> {
        self.ensure_open()?;
        let missing = || Error::NoSuchDeadLetter {
            dlq: dlq.to_owned(),
            id: id.to_owned(),
        };
        let entry_id = EntryId::parse(id).ok_or_else(missing)?;
        let mut streams = lock(&self.shared.streams);
        let stream = streams.get_mut(dlq).ok_or_else(missing)?;
        let entry = streams::find(&stream.entries, entry_id).ok_or_else(missing)?;
        let replay = Replay::of(DeadLetterEntry {
            id: id.to_owned(),
            letter: DeadLetter::from_fields(dlq, entry.owned_fields()),
        })?;
        stream.delete(entry_id, &self.shared.activity);
        match &replay.body {
            WireBody::Fields(fields) => {
                let fields = fields.iter().map(|(k, v)| (k.clone().into(), v.clone()));
                let fields = streams::pack(fields.collect());
                let new_id = streams.get_or_create(&replay.channel).append(
                    fields,
                    None,
                    &self.shared.activity,
                );
                Ok(replay.receipt(Some(new_id.text()), None))
            }
            WireBody::Json(body) => {
                drop(streams);
                let n = self
                    .shared
                    .pubsub
                    .publish(&replay.channel, body, &self.shared.activity);
                Ok(replay.receipt(None, Some(n)))
            }
        }
    }

    /// Marks are shared by every clone of the transport, like keys of one Redis.
    async fn dedup_seen(&self, key: &str) -> Result<bool> {
        Ok(self.shared.marks.contains(key))
    }

    async fn dedup_mark(&self, key: &str, ttl: std::time::Duration) -> Result<()> {
        self.shared.marks.insert(key, ttl);
        Ok(())
    }

    /// Leases are shared by every clone of the transport, like keys of one Redis; closing a
    /// handle ends the leases taken through it.
    async fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
        replacing: Option<&str>,
    ) -> Result<LeaseState> {
        self.ensure_open()?;
        Ok(self
            .shared
            .leases
            .hold(key, holder, ttl, replacing, self.conn.id))
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<()> {
        self.shared.leases.release(key, holder);
        Ok(())
    }

    fn activity(&self) -> Option<Activity> {
        Some(self.shared.activity.clone())
    }

    /// Closes this handle's connection: its subscriptions return `None` from `next()` once their
    /// buffer is drained, its consumers' `fetch` fails with [`Error::Closed`], its broadcast readers are
    /// removed, and publishing through it fails with [`Error::Closed`]. Pending entries of its
    /// group consumers stay pending and their leases end (another instance claims them after
    /// `claim_idle`, and an instance of the same name re-reads them), the consumer-name leases
    /// taken through it end, and other clones of the transport are not affected.
    async fn close(&self) {
        self.conn.closed.store(true, Ordering::Release);
        self.shared.pubsub.close_connection(self.conn.id);
        self.shared.leases.release_connection(self.conn.id);
        let mut streams = lock(&self.shared.streams);
        let conn = self.conn.id;
        let now = tokio::time::Instant::now();
        for stream in streams.iter_mut() {
            stream.remove_readers(|r| r.conn == conn, &self.shared.activity);
            for group in &mut stream.groups {
                group.release_leases(|l| l.conn == conn, now);
            }
            // Waiting fetches re-check, see the closed flag and return.
            stream.has_waiters = true;
            stream.wake();
        }
    }
}
