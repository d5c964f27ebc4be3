//! Durable events: stream consumers.
//!
//! A **group consumer** ([`group`]) is one member (`consumer`) of a consumer group (`group`) on
//! a stream. Redis hands each entry to one member of each group and keeps it in the group's
//! pending entries list (PEL) until it is acknowledged with `XACK`. A fetch takes, in this
//! order:
//!
//! 1. after a start, the consumer's own pending entries (`XREADGROUP … STREAMS key 0`): what a
//!    previous process of the same consumer name read but did not acknowledge; and again after
//!    a lost connection, for entries Redis handed over in a reply that never arrived (entries
//!    in flight in this process are skipped);
//! 2. every `claim_idle / 10` (between 100 ms and 30 s), entries idle for `claim_idle` in any
//!    member's PEL (`XAUTOCLAIM`): the work of a consumer that died, claimed between
//!    `claim_idle` and `claim_idle + claim_idle / 10` after its consumer last touched it;
//! 3. new entries (`XREADGROUP … BLOCK … STREAMS key >`), waiting at most `RedisOptions::block`.
//!
//! Redis counts deliveries per entry (re-reads and claims included); that count, read with
//! `XPENDING`, becomes `Delivery::delivery_count`, so `max_deliveries` holds across restarts.
//! While a handler runs, its entry's idle time is reset regularly ([`in_flight`]), so a slow
//! handler does not look like a dead consumer.
//!
//! A stopping consumer takes no claim and starts no blocking read; a blocking read in flight is
//! ended with `CLIENT UNBLOCK` ([`reader`]) and its reply handed to the dispatcher, which handles
//! it, acks, and lets the consumer leave its group. Members that are gone and own nothing are
//! removed from the group ([`membership`]); a member with pending entries never is.
//!
//! A **broadcast consumer** ([`broadcast`]) reads the whole stream with `XREAD` from the position
//! it started at; nothing is acknowledged.
//!
//! Each consumer owns its connection ([`reader`]), created without response timeout because it
//! blocks in `XREADGROUP`; acks go through the shared publish connection. A lost connection
//! (or a read without a reply after `block + response_timeout`: a network black hole) makes
//! `fetch` fail (the dispatcher backs off and fetches again) and is replaced on the next
//! fetch. A vanished group (`NOGROUP` after `FLUSHALL` or a restart without persistence) is
//! created again.

mod broadcast;
mod group;
mod in_flight;
mod membership;
mod reader;

pub(crate) use membership::backlog;

use std::sync::Arc;
use std::time::Duration;

use eventbus_core::Result;
use eventbus_core::transport::{ConsumeMode, ConsumerSpec, StartFrom, StreamConsumer};
use redis::Value;

use crate::Inner;
use crate::error::{On, command_failed_as, is_busy_group, unexpected};
use crate::reply;

/// The shortest `BLOCK` sent (`BLOCK 0` would wait forever).
const MIN_BLOCK: Duration = Duration::from_millis(10);

/// The `BLOCK` argument of a blocking read that waits `wait`.
fn block_millis(wait: Duration) -> u64 {
    u64::try_from(wait.max(MIN_BLOCK).as_millis()).unwrap_or(u64::MAX)
}

pub(crate) async fn consume(
    inner: &Arc<Inner>,
    spec: ConsumerSpec,
) -> Result<Arc<dyn StreamConsumer>> {
    match spec.mode {
        ConsumeMode::Group => {
            let start = match spec.start {
                StartFrom::Beginning => "0",
                StartFrom::Now => "$",
            };
            create_group(inner, &spec.stream, &spec.group, start).await?;
            check_read_permission(inner, &spec).await?;
            let after = membership::prune_after(inner, spec.claim_idle);
            membership::prune(inner, &spec.stream, &spec.group, &spec.consumer, after).await;
            Ok(group::GroupConsumer::start(inner.clone(), spec))
        }
        ConsumeMode::Broadcast => {
            let last = last_entry_id(inner, &spec.stream).await?;
            tracing::debug!(stream = %spec.stream, from = %last, "broadcast consumer starts");
            Ok(Arc::new(broadcast::BroadcastConsumer::new(
                inner.clone(),
                spec,
                last,
            )))
        }
    }
}

/// `XGROUP CREATE key group <start> MKSTREAM`.
fn create_group_cmd(stream: &str, group: &str, start: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM");
    cmd
}

/// The outcome of `XGROUP CREATE`: true when the group was created, false when it existed.
fn group_created(
    result: redis::RedisResult<Value>,
    inner: &Inner,
    stream: &str,
    group: &str,
) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_busy_group(&e) => Ok(false),
        Err(e) => Err(command_failed_as(
            inner.address.user(),
            "XGROUP CREATE",
            On::Key(stream),
            format!("XGROUP CREATE of consumer group \"{group}\" on stream \"{stream}\""),
            e,
        )),
    }
}

/// Creates the group (and the stream) unless it exists.
async fn create_group(inner: &Inner, stream: &str, group: &str, start: &str) -> Result<bool> {
    let mut conn = inner.publisher.clone();
    let result = create_group_cmd(stream, group, start)
        .query_async(&mut conn)
        .await;
    group_created(result, inner, stream, group)
}

/// Reading a consumer's pending entries after this id returns nothing. Not the largest id
/// (`…615-…615`): Redis uses that one for `>`, which would deliver new entries.
const PROBE_ENTRY_ID: &str = "18446744073709551615-18446744073709551614";

/// Fails now, instead of at every fetch of a consumer that then reads nothing, when the ACL
/// user may not run `XREADGROUP` on the stream: a read of this consumer's pending entries after
/// an id beyond any entry's, which returns nothing and changes nothing (Redis creates the
/// consumer, as the first fetch would).
async fn check_read_permission(inner: &Inner, spec: &ConsumerSpec) -> Result<()> {
    let mut conn = inner.publisher.clone();
    let result: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&spec.group)
        .arg(&spec.consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&spec.stream)
        .arg(PROBE_ENTRY_ID)
        .query_async(&mut conn)
        .await;
    result.map(drop).map_err(|e| {
        command_failed_as(
            inner.address.user(),
            "XREADGROUP",
            On::Key(&spec.stream),
            format!(
                "XREADGROUP of consumer \"{}\" of group \"{}\" on stream \"{}\"",
                spec.consumer, spec.group, spec.stream
            ),
            e,
        )
    })
}

/// The id of the newest entry (`XREVRANGE key + - COUNT 1`), `0-0` for an empty or missing
/// stream.
async fn last_entry_id(inner: &Inner, stream: &str) -> Result<String> {
    let mut conn = inner.publisher.clone();
    let value: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            command_failed_as(
                inner.address.user(),
                "XREVRANGE",
                On::Key(stream),
                format!("XREVRANGE of stream \"{stream}\""),
                e,
            )
        })?;
    let entries = reply::entries(value)
        .ok_or_else(|| unexpected(format!("XREVRANGE of \"{stream}\": unexpected reply shape")))?;
    Ok(entries
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |e| e.id))
}
