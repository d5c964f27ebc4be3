//! A member of a consumer group: own pending entries first, then claims, then new entries
//! (see the [module docs](super)).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventbus_core::envelope::WireBody;
use eventbus_core::stats::Stats;
use eventbus_core::transport::{ConsumerSpec, Delivery, StreamConsumer};
use eventbus_core::{Error, Result};
use redis::{RedisError, Value};
use tokio::time::Instant;

use super::in_flight::InFlight;
use super::membership;
use super::reader::{Interrupter, Reader};
use super::{block_millis, create_group_cmd, group_created};
use crate::Inner;
use crate::error::{
    On, command_failed, command_failed_as, is_connection_error, is_no_group, unexpected,
};
use crate::reply::{self, Entry};

/// A claim scan runs every `claim_idle / CLAIM_SCANS_PER_IDLE`, so an entry is claimed at most
/// a tenth of `claim_idle` after it became claimable…
const CLAIM_SCANS_PER_IDLE: u32 = 10;
/// …but at most this often (a scan costs Redis a walk of the pending list)…
const CLAIM_EVERY_MIN: Duration = Duration::from_millis(100);
/// …and at least this often.
const CLAIM_EVERY_MAX: Duration = Duration::from_secs(30);
/// Members that are gone are looked for at most this often, whatever the claim scans do.
const PRUNE_EVERY_MIN: Duration = Duration::from_secs(1);
/// `XAUTOCLAIM` calls per fetch at most (each scans up to 10 × COUNT PEL entries).
const CLAIM_ROUNDS: usize = 10;
/// The in-flight entries of a consumer are renewed at most this often.
const RENEW_EVERY_MIN: Duration = Duration::from_millis(100);

/// A member of a consumer group.
pub(super) struct GroupConsumer {
    inner: Arc<Inner>,
    stream: String,
    group: String,
    consumer: String,
    claim_idle: Duration,
    claim_every: Duration,
    prune_every: Duration,
    stats: Arc<Stats>,
    what: String,
    in_flight: InFlight,
    /// Ends the blocking read of a stopping consumer (the state is locked by that read).
    interrupter: Interrupter,
    /// Members idle this long that own nothing are removed from the group.
    prune_after: Duration,
    state: tokio::sync::Mutex<GroupState>,
}

struct GroupState {
    reader: Reader,
    /// Where the re-read of this consumer's own pending entries continues; `None` once done.
    own_pending: Option<String>,
    next_claim: Instant,
    claim_cursor: String,
    next_prune: Instant,
}

impl GroupConsumer {
    /// The consumer, with the task that renews its in-flight entries.
    pub(super) fn start(inner: Arc<Inner>, spec: ConsumerSpec) -> Arc<Self> {
        let consumer = Arc::new(Self::new(inner, spec));
        renew_in_flight_entries(&consumer);
        consumer
    }

    fn new(inner: Arc<Inner>, spec: ConsumerSpec) -> Self {
        let what = format!(
            "consumer \"{}\" of group \"{}\" on stream \"{}\"",
            spec.consumer, spec.group, spec.stream
        );
        let reader = Reader::new(&inner, what.clone(), spec.stats.clone());
        GroupConsumer {
            interrupter: reader.interrupter.clone(),
            prune_after: membership::prune_after(&inner, spec.claim_idle),
            state: tokio::sync::Mutex::new(GroupState {
                reader,
                own_pending: Some("0".to_owned()),
                next_claim: Instant::now(),
                claim_cursor: "0-0".to_owned(),
                next_prune: Instant::now(),
            }),
            claim_every: claim_every(spec.claim_idle),
            prune_every: (spec.claim_idle / 2).clamp(PRUNE_EVERY_MIN, CLAIM_EVERY_MAX),
            inner,
            stream: spec.stream,
            group: spec.group,
            consumer: spec.consumer,
            claim_idle: spec.claim_idle,
            stats: spec.stats,
            what,
            in_flight: InFlight::new(spec.claim_idle),
        }
    }

    /// `XCLAIM key group consumer <min-idle> id... JUSTID` on the entries being handled here:
    /// resets their idle time without counting a delivery. `min_idle` (half the renewal
    /// period) keeps it from taking back an entry another consumer claimed a moment ago.
    async fn renew_in_flight(&self, min_idle: Duration) {
        let ids = self.in_flight.renewable();
        if ids.is_empty() {
            return;
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(&ids)
            .arg("JUSTID");
        let mut conn = self.inner.publisher.clone();
        if let Err(e) = cmd.query_async::<Value>(&mut conn).await {
            tracing::debug!(consumer = %self.what, error = %e, "cannot renew the entries in flight");
        }
    }

    fn failed(&self, command: &str, e: RedisError) -> Failure {
        if is_no_group(&e) {
            Failure::NoGroup
        } else {
            // `command` may say more than the command's name ("XREADGROUP of own pending…").
            let name = command.split(' ').next().unwrap_or(command);
            Failure::Other(command_failed_as(
                self.inner.address.user(),
                name,
                On::Key(&self.stream),
                format!("{command} for {}", self.what),
                e,
            ))
        }
    }

    async fn take(&self, st: &mut GroupState, max: usize) -> Result<Vec<Delivery>, Failure> {
        if st.reader.take_dropped() {
            // Redis may have handed entries to this consumer on the connection that was lost
            // (or killed before it could answer): they wait in its pending list and would only
            // come back through a claim after `claim_idle`. Read that list again first.
            st.own_pending = Some("0".to_owned());
        }
        if let Some(cursor) = st.own_pending.clone() {
            return self.own_pending(st, &cursor, max).await;
        }
        if self.interrupter.is_stopping() {
            // A claim or a read of new entries would hand over entries nobody will handle.
            return Ok(Vec::new());
        }
        let now = Instant::now();
        if now >= st.next_claim {
            let claimed = self.claim(st, max).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
        }
        let wait = st
            .next_claim
            .saturating_duration_since(Instant::now())
            .min(self.inner.options.block);
        let cmd = self.xreadgroup(max, Some(block_millis(wait)), ">");
        let Some(value) = st
            .reader
            .blocking_cmd(&cmd)
            .await
            .map_err(|e| self.failed("XREADGROUP", e))?
        else {
            return Ok(Vec::new());
        };
        let entries = self.parse_read(value)?;
        Ok(self.deliveries(entries.into_iter().map(|e| (e, 1))))
    }

    /// `XREADGROUP GROUP <group> <consumer> COUNT <max> [BLOCK <ms>] STREAMS <stream> <id>`.
    fn xreadgroup(&self, max: usize, block_ms: Option<u64>, id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(id);
        cmd
    }

    /// Step 1: what this consumer name read before and never acknowledged: after a start, and
    /// again after a lost connection. Entries being handled here right now are skipped.
    async fn own_pending(
        &self,
        st: &mut GroupState,
        cursor: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, Failure> {
        let cmd = self.xreadgroup(max, None, cursor);
        let value = st
            .reader
            .cmd(&cmd)
            .await
            .map_err(|e| self.failed("XREADGROUP of own pending entries", e))?;
        let entries = self.parse_read(value)?;
        let Some(last) = entries.last() else {
            st.own_pending = None;
            return Ok(Vec::new());
        };
        st.own_pending = Some(last.id.clone());
        let (live, deleted): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .filter(|e| !self.in_flight.protects(&e.id))
            .partition(|e| e.fields.is_some());
        if !deleted.is_empty() {
            let ids: Vec<String> = deleted.into_iter().map(|e| e.id).collect();
            tracing::warn!(consumer = %self.what, ids = ?ids, "pending entries were trimmed from the stream before they were handled; dropping them");
            if let Err(e) = self.xack(&ids).await {
                tracing::debug!(error = %e, "cannot acknowledge trimmed entries");
            }
        }
        if !live.is_empty() {
            tracing::info!(consumer = %self.what, count = live.len(), "re-delivering this consumer's pending entries");
        }
        let counted = self.with_delivery_counts(st, live).await?;
        Ok(self.deliveries(counted.into_iter()))
    }

    /// Step 2: entries idle too long in any member's pending list.
    async fn claim(&self, st: &mut GroupState, max: usize) -> Result<Vec<Delivery>, Failure> {
        let mut claimed = Vec::new();
        for _round in 0..CLAIM_ROUNDS {
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(u64::try_from(self.claim_idle.as_millis()).unwrap_or(u64::MAX))
                .arg(&st.claim_cursor)
                .arg("COUNT")
                .arg(max - claimed.len());
            let value = st
                .reader
                .cmd(&cmd)
                .await
                .map_err(|e| self.failed("XAUTOCLAIM", e))?;
            let reply = reply::auto_claim(value).ok_or_else(|| {
                Failure::Other(unexpected(format!(
                    "XAUTOCLAIM for {}: unexpected reply shape",
                    self.what
                )))
            })?;
            st.claim_cursor = reply.cursor;
            if !reply.deleted.is_empty() {
                tracing::warn!(consumer = %self.what, ids = ?reply.deleted, "pending entries of another consumer were trimmed from the stream before they were handled; they are lost");
            }
            for entry in reply.claimed {
                if entry.fields.is_none() || self.in_flight.protects(&entry.id) {
                    // Deleted meanwhile, or still being handled here (a slow handler).
                    continue;
                }
                claimed.push(entry);
            }
            if st.claim_cursor == "0-0" {
                let now = Instant::now();
                st.next_claim = now + self.claim_every;
                if now >= st.next_prune {
                    st.next_prune = now + self.prune_every;
                    // A full scan: members whose work was claimed and who read no more are gone.
                    membership::prune(
                        &self.inner,
                        &self.stream,
                        &self.group,
                        &self.consumer,
                        self.prune_after,
                    )
                    .await;
                }
                break;
            }
            if claimed.len() >= max {
                // More may be claimable: continue from the cursor at the next fetch.
                break;
            }
        }
        if !claimed.is_empty() {
            tracing::info!(consumer = %self.what, count = claimed.len(), "claimed entries idle in other consumers' pending lists");
        }
        let counted = self.with_delivery_counts(st, claimed).await?;
        Ok(self.deliveries(counted.into_iter()))
    }

    /// Reads the delivery counter of each entry (`XPENDING key group id id 1`, pipelined) and
    /// keeps the entries that are still pending for this consumer.
    async fn with_delivery_counts(
        &self,
        st: &mut GroupState,
        entries: Vec<Entry>,
    ) -> Result<Vec<(Entry, u32)>, Failure> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for e in &entries {
            pipe.cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&e.id)
                .arg(&e.id)
                .arg(1);
        }
        let values: Vec<Value> = st
            .reader
            .query(async |c| pipe.query_async(c).await)
            .await
            .map_err(|e| self.failed("XPENDING", e))?;
        let mut out = Vec::with_capacity(entries.len());
        for (entry, value) in entries.into_iter().zip(values) {
            match reply::pending_entry(value) {
                Some((owner, count)) if owner == self.consumer => out.push((entry, count.max(1))),
                // Acknowledged or claimed by another consumer since it was read.
                _ => {
                    tracing::debug!(consumer = %self.what, id = %entry.id, "entry no longer pending here; skipped")
                }
            }
        }
        Ok(out)
    }

    fn parse_read(&self, value: Value) -> Result<Vec<Entry>, Failure> {
        reply::read_reply(value).ok_or_else(|| {
            Failure::Other(unexpected(format!(
                "XREADGROUP for {}: unexpected reply shape",
                self.what
            )))
        })
    }

    fn deliveries(&self, entries: impl Iterator<Item = (Entry, u32)>) -> Vec<Delivery> {
        let batch: Vec<Delivery> = entries
            .filter_map(|(entry, count)| {
                let fields = entry.fields?;
                Some(Delivery {
                    channel: self.stream.clone(),
                    body: WireBody::Fields(fields),
                    entry_id: Some(entry.id),
                    delivery_count: count,
                    token: None,
                })
            })
            .collect();
        self.in_flight
            .insert(batch.iter().filter_map(|d| d.entry_id.as_deref()));
        batch
    }

    /// `XACK` on the shared connection, sent a second time when the first attempt hit a lost
    /// connection (acknowledging twice is harmless; not acknowledging means a redelivery).
    async fn xack(&self, ids: &[String]) -> redis::RedisResult<Value> {
        let mut conn = self.inner.publisher.clone();
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.stream).arg(&self.group).arg(ids);
        match cmd.query_async(&mut conn).await {
            Err(e) if is_connection_error(&e) => cmd.query_async(&mut conn).await,
            result => result,
        }
    }

    /// The stream or group vanished: create it again, from the beginning of whatever the
    /// stream holds now (everything in it was published after it vanished).
    async fn recreate_group(&self, st: &mut GroupState) -> Result<()> {
        // On this consumer's connection: it was just used (or re-established) successfully.
        let cmd = create_group_cmd(&self.stream, &self.group, "0");
        let result = st.reader.cmd(&cmd).await;
        let created = group_created(result, &self.inner, &self.stream, &self.group)?;
        st.own_pending = None;
        st.claim_cursor = "0-0".to_owned();
        self.in_flight.clear();
        if created {
            Stats::incr(&self.stats.groups_recreated);
            tracing::warn!(consumer = %self.what, "the consumer group had vanished (FLUSHALL or a restart without persistence); created it again");
        }
        Ok(())
    }
}

/// How often a consumer scans its group for claimable entries: an entry idle for `claim_idle`
/// is claimed at most this much later (when the consumer has room for it).
fn claim_every(claim_idle: Duration) -> Duration {
    (claim_idle / CLAIM_SCANS_PER_IDLE).clamp(CLAIM_EVERY_MIN, CLAIM_EVERY_MAX)
}

/// Renews the consumer's in-flight entries every third of `claim_idle`, for as long as the
/// consumer exists (the task holds it weakly).
fn renew_in_flight_entries(consumer: &Arc<GroupConsumer>) {
    let every = (consumer.claim_idle / 3).max(RENEW_EVERY_MIN);
    let closed = consumer.inner.closed.clone();
    let consumer = Arc::downgrade(consumer);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = closed.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let Some(consumer) = consumer.upgrade() else {
                return;
            };
            consumer.renew_in_flight(every / 2).await;
        }
    });
}

/// Why a fetch step failed.
enum Failure {
    /// `NOGROUP`: the stream or the group is gone.
    NoGroup,
    /// Anything else, with context.
    Other(Error),
}

#[async_trait]
impl StreamConsumer for GroupConsumer {
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>> {
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let mut st = self.state.lock().await;
        match self.take(&mut st, max.max(1)).await {
            Ok(batch) => Ok(batch),
            Err(Failure::NoGroup) => {
                self.recreate_group(&mut st).await?;
                Ok(Vec::new())
            }
            Err(Failure::Other(e)) => Err(e),
        }
    }

    async fn ack(&self, entry_ids: &[String]) -> Result<()> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let result = self.xack(entry_ids).await;
        self.in_flight.remove(entry_ids);
        match result {
            Ok(_) => Ok(()),
            // The group vanished with its pending list: nothing is left to acknowledge.
            Err(e) if is_no_group(&e) => Ok(()),
            Err(e) => Err(command_failed(
                format!("XACK of {} entries for {}", entry_ids.len(), self.what),
                e,
            )),
        }
    }

    async fn interrupt(&self) {
        self.interrupter.interrupt(&self.inner.publisher).await;
    }

    /// Removes this consumer from its group if it owns nothing (an entry kept for a retry, or
    /// whose ack failed, stays pending under its name for the next instance).
    async fn leave(&self) {
        match membership::remove_if_idle(&self.inner, &self.stream, &self.group, &self.consumer)
            .await
        {
            Ok(true) => tracing::debug!(consumer = %self.what, "left the group"),
            Ok(false) => {
                tracing::info!(consumer = %self.what, "stays in the group: it has pending entries, which its next instance reads first")
            }
            Err(e) => {
                tracing::debug!(consumer = %self.what, error = %e, "cannot leave the group")
            }
        }
    }
}
