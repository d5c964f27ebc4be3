//! Durable consumers: a member of a consumer group (`XREADGROUP`, `XAUTOCLAIM`, `XACK`) and a
//! broadcast reader (`XREAD` from its own position).
//!
//! `fetch` changes the shared state only in the poll that returns the batch, synchronously under
//! the stream lock, so dropping a `fetch` future loses nothing. A stopping dispatcher awaits its
//! fetch in flight (Redis hands entries over when it replies); `interrupt` makes that fetch
//! return at once, empty, so a shutdown does not wait for [`MAX_WAIT`].
//!
//! Every entry a group member hands out is leased to it until it is acked (see
//! [`Lease`](super::streams::Lease)): a slow handler's entry is not claimed by another consumer,
//! as the Redis transport's lease renewal ensures there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::streams::{Entry, EntryId, Lease, Pending, Stream, find, position_after};
use super::{Connection, Shared, lock};
use crate::activity::ActivityToken;
use crate::envelope::WireBody;
use crate::error::{Error, Result};
use crate::transport::{ConsumerSpec, Delivery, IN_FLIGHT_LEASE_FACTOR, StreamConsumer};

/// The longest a `fetch` waits before returning an empty batch.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// A member of a consumer group.
pub(super) struct GroupConsumer {
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    /// This consumer object, as the holder of its leases (several objects can share a name).
    id: u64,
    stream: String,
    group_name: String,
    /// Index of the group in its stream (groups are never removed).
    group: usize,
    /// Index of this consumer's name in the group.
    consumer: u32,
    claim_idle: Duration,
    max_lease: Duration,
    notify: Arc<Notify>,
    /// Set by `interrupt`: fetches return empty from then on.
    stopping: AtomicBool,
    local: Mutex<Local>,
}

/// What only this consumer object knows.
struct Local {
    /// Entries pending for this consumer name when this object was created (a restart): they
    /// are delivered again first, like `XREADGROUP ... 0`.
    backlog: VecDeque<EntryId>,
    /// No entry of another consumer can be claimable before this time: the claim scan is
    /// skipped until then, and a waiting fetch wakes up at this time.
    next_claim_check: Instant,
}

impl GroupConsumer {
    /// Joins (and creates, when missing) the group of `spec`.
    pub(super) fn join(shared: &Arc<Shared>, conn: &Arc<Connection>, spec: ConsumerSpec) -> Self {
        let mut streams = lock(&shared.streams);
        let stream = streams.get_or_create(&spec.stream);
        let group = stream.create_group(&spec.group, spec.start, &shared.activity);
        let notify = stream.notify.clone();
        let g = &mut stream.groups[group];
        let consumer = g.consumer_index(&spec.consumer);
        let backlog = g
            .pel
            .iter()
            .filter(|(_, p)| p.consumer == consumer)
            .map(|(id, _)| *id)
            .collect();
        drop(streams);
        GroupConsumer {
            shared: shared.clone(),
            conn: conn.clone(),
            id: shared.next_id(),
            stream: spec.stream,
            group_name: spec.group,
            group,
            consumer,
            claim_idle: spec.claim_idle,
            max_lease: spec.claim_idle.saturating_mul(IN_FLIGHT_LEASE_FACTOR),
            notify,
            stopping: AtomicBool::new(false),
            local: Mutex::new(Local {
                backlog,
                next_claim_check: Instant::now(),
            }),
        }
    }

    /// Takes up to `max` deliveries: own backlog, then claims, then new entries. Each one is
    /// leased to this consumer until it is acked.
    fn take(
        &self,
        stream: &mut Stream,
        local: &mut Local,
        max: usize,
        now: Instant,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        let Stream {
            entries, groups, ..
        } = stream;
        let group = &mut groups[self.group];
        group.last_seen[self.consumer as usize] = now;
        // A read makes the name a member again, as on Redis.
        group.member[self.consumer as usize] = true;
        let mut lost = Vec::new();

        // 1. Own entries left pending by an earlier consumer of the same name (not those another
        //    live consumer object of that name is handling).
        while out.len() < max {
            let Some(id) = local.backlog.pop_front() else {
                break;
            };
            let Some(p) = group.pel.get_mut(&id) else {
                continue; // acked or claimed away meanwhile
            };
            if p.consumer != self.consumer || p.leased_by_other(self.id, now) {
                continue;
            }
            match find(entries, id) {
                Some(entry) => out.push(self.redeliver(entry, p, now)),
                None => lost.push(id),
            }
        }

        // 2. Entries idle too long in any consumer's list (`XAUTOCLAIM`): not those being
        //    handled by a live consumer, nor this consumer's own backlog (step 1 has them).
        if out.len() < max && now >= local.next_claim_check {
            // Never later than `claim_idle` from now: a lease ends early when its holder is
            // dropped, and its entry is claimable `claim_idle` after that.
            let mut next = after(now, self.claim_idle.max(Duration::from_millis(1)));
            for (id, p) in group.pel.iter_mut() {
                if p.lease.is_none() && p.consumer == self.consumer {
                    continue;
                }
                if p.lease.is_some_and(|l| now < l.until) {
                    continue;
                }
                let claimable_at = after(p.last_active(now), self.claim_idle);
                if claimable_at > now {
                    next = next.min(claimable_at);
                    continue;
                }
                if out.len() >= max {
                    next = now; // more to claim on the next fetch
                    break;
                }
                match find(entries, *id) {
                    Some(entry) => {
                        p.consumer = self.consumer;
                        out.push(self.redeliver(entry, p, now));
                    }
                    None => lost.push(*id),
                }
            }
            local.next_claim_check = next;
        }

        // Entries trimmed or deleted while pending: nothing left to deliver.
        for id in lost {
            group.pel.remove(&id);
            tracing::warn!(stream = %self.stream, group = %self.group_name, id = %id, "a pending entry was trimmed from the stream before it was acknowledged; dropping it from the pending list");
            self.shared.activity.sub(1);
        }

        // 3. New entries (`XREADGROUP ... >`).
        if out.len() < max {
            let start = position_after(entries, group.last_delivered);
            for entry in entries.range(start..).take(max - out.len()) {
                group.pel.insert(
                    entry.id,
                    Pending {
                        consumer: self.consumer,
                        delivered_at: now,
                        delivery_count: 1,
                        lease: Some(self.lease(now)),
                    },
                );
                group.last_delivered = entry.id;
                out.push(delivery(&self.stream, entry, 1, None));
            }
        }
        out
    }

    fn lease(&self, now: Instant) -> Lease {
        Lease {
            holder: self.id,
            conn: self.conn.id,
            until: after(now, self.max_lease),
        }
    }

    fn redeliver(&self, entry: &Entry, p: &mut Pending, now: Instant) -> Delivery {
        p.delivery_count = p.delivery_count.saturating_add(1);
        p.delivered_at = now;
        p.lease = Some(self.lease(now));
        delivery(&self.stream, entry, p.delivery_count, None)
    }

    fn missing(&self) -> Error {
        Error::transport(
            "memory",
            format!(
                "stream `{}` of group `{}` vanished",
                self.stream, self.group_name
            ),
            None,
        )
    }
}

#[async_trait]
impl StreamConsumer for GroupConsumer {
    /// Returns `Err(Error::Closed)` once the transport handle is closed, and `Ok(vec![])` after
    /// waiting about a second with nothing to deliver.
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>> {
        let give_up = Instant::now() + MAX_WAIT;
        loop {
            let (notified, wake_at) = {
                let mut local = lock(&self.local);
                let mut streams = lock(&self.shared.streams);
                // Checked under the lock: `close` sets the flag before it takes the lock to
                // wake waiters, so either this sees it or the wake-up reaches this wait.
                if self.conn.is_closed() {
                    return Err(Error::Closed);
                }
                // The same for `interrupt`.
                if self.stopping.load(Ordering::Acquire) {
                    return Ok(Vec::new());
                }
                let stream = streams
                    .get_mut(&self.stream)
                    .ok_or_else(|| self.missing())?;
                let now = Instant::now();
                let out = self.take(stream, &mut local, max, now);
                if !out.is_empty() || max == 0 || now >= give_up {
                    return Ok(out);
                }
                // Registered before the lock is released: an append cannot slip in between.
                stream.has_waiters = true;
                (self.notify.notified(), local.next_claim_check.min(give_up))
            };
            let _ = tokio::time::timeout_at(wake_at, notified).await;
        }
    }

    async fn ack(&self, entry_ids: &[String]) -> Result<()> {
        let mut streams = lock(&self.shared.streams);
        let Some(stream) = streams.get_mut(&self.stream) else {
            return Ok(());
        };
        let pel = &mut stream.groups[self.group].pel;
        let mut acked = 0;
        let mut invalid = None;
        for raw in entry_ids {
            match EntryId::parse(raw) {
                Some(id) => acked += usize::from(pel.remove(&id).is_some()),
                None => invalid = Some(raw),
            }
        }
        self.shared.activity.sub(acked);
        match invalid {
            Some(raw) => Err(Error::transport(
                "memory",
                format!(
                    "XACK {} {}: invalid stream entry id {raw:?}",
                    self.stream, self.group_name
                ),
                None,
            )),
            None => Ok(()),
        }
    }

    async fn interrupt(&self) {
        stop_waiting(&self.stopping, &self.shared, &self.stream);
    }

    async fn leave(&self) {
        let mut streams = lock(&self.shared.streams);
        if let Some(stream) = streams.get_mut(&self.stream) {
            stream.groups[self.group].leave(self.consumer);
        }
    }
}

/// Sets `stopping` and wakes the fetches waiting on `stream`: like `close`, the flag is set
/// before the lock is taken, so a fetch either sees it or gets the wake-up.
fn stop_waiting(stopping: &AtomicBool, shared: &Shared, stream: &str) {
    stopping.store(true, Ordering::Release);
    let mut streams = lock(&shared.streams);
    if let Some(stream) = streams.get_mut(stream) {
        stream.has_waiters = true;
        stream.wake();
    }
}

impl Drop for GroupConsumer {
    /// A dropped consumer (a crash, or a handler that stopped) holds nothing any more: entries
    /// it did not ack start to idle now, and another consumer claims them after `claim_idle`.
    fn drop(&mut self) {
        let mut streams = lock(&self.shared.streams);
        if let Some(stream) = streams.get_mut(&self.stream) {
            let id = self.id;
            stream.groups[self.group].release_leases(|l| l.holder == id, Instant::now());
        }
    }
}

/// A broadcast reader: sees every entry added after it started; nothing is acked.
pub(super) struct BroadcastConsumer {
    shared: Arc<Shared>,
    conn: Arc<Connection>,
    stream: String,
    id: u64,
    notify: Arc<Notify>,
    stopping: AtomicBool,
}

impl BroadcastConsumer {
    /// Starts reading `spec.stream` at its current end (`$`).
    pub(super) fn start(shared: &Arc<Shared>, conn: &Arc<Connection>, spec: ConsumerSpec) -> Self {
        let id = shared.next_id();
        let mut streams = lock(&shared.streams);
        let stream = streams.get_or_create(&spec.stream);
        stream.add_reader(id, conn.id);
        let notify = stream.notify.clone();
        drop(streams);
        BroadcastConsumer {
            shared: shared.clone(),
            conn: conn.clone(),
            stream: spec.stream,
            id,
            notify,
            stopping: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl StreamConsumer for BroadcastConsumer {
    /// Returns `Err(Error::Closed)` once the transport handle is closed, and `Ok(vec![])` after
    /// waiting about a second with nothing to deliver.
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>> {
        let give_up = Instant::now() + MAX_WAIT;
        loop {
            let notified = {
                let mut streams = lock(&self.shared.streams);
                if self.conn.is_closed() {
                    return Err(Error::Closed);
                }
                if self.stopping.load(Ordering::Acquire) {
                    return Ok(Vec::new());
                }
                let Some(stream) = streams.get_mut(&self.stream) else {
                    return Ok(Vec::new());
                };
                let Stream {
                    entries, readers, ..
                } = &mut *stream;
                let Some(reader) = readers.iter_mut().find(|r| r.id == self.id) else {
                    return Err(Error::Closed); // removed by close()
                };
                let start = position_after(entries, reader.last);
                let out: Vec<Delivery> = entries
                    .range(start..)
                    .take(max)
                    .map(|entry| {
                        reader.last = entry.id;
                        // The unit was added for this reader when the entry was appended.
                        let token = self.shared.activity.adopt();
                        delivery(&self.stream, entry, 1, Some(token))
                    })
                    .collect();
                if !out.is_empty() || max == 0 || Instant::now() >= give_up {
                    return Ok(out);
                }
                stream.has_waiters = true;
                self.notify.notified()
            };
            let _ = tokio::time::timeout_at(give_up, notified).await;
        }
    }

    async fn ack(&self, _entry_ids: &[String]) -> Result<()> {
        Ok(())
    }

    async fn interrupt(&self) {
        stop_waiting(&self.stopping, &self.shared, &self.stream);
    }
}

impl Drop for BroadcastConsumer {
    fn drop(&mut self) {
        let mut streams = lock(&self.shared.streams);
        if let Some(stream) = streams.get_mut(&self.stream) {
            stream.remove_readers(|r| r.id == self.id, &self.shared.activity);
        }
    }
}

fn delivery(stream: &str, entry: &Entry, count: u32, token: Option<ActivityToken>) -> Delivery {
    Delivery {
        channel: stream.to_owned(),
        body: WireBody::Fields(entry.owned_fields()),
        entry_id: Some(entry.id.text()),
        delivery_count: count,
        token,
    }
}

/// `t + d`, saturating far in the future instead of overflowing.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(t)
}
