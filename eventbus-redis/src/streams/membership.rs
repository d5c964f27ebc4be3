//! Consumers that are gone leave their group, so that `XINFO CONSUMERS` lists the live ones.
//!
//! A consumer is removed (`XGROUP DELCONSUMER`) only when it owns nothing: deleting one with
//! pending entries would drop them from the group's pending list, and nobody would ever
//! deliver them again. The check and the deletion run in one script, so an entry read between
//! them cannot be lost. Two occasions:
//!
//! * a consumer that stops gracefully leaves its group itself, after its last ack;
//! * the consumers of a group remove members that own nothing and have not read for
//!   [`prune_after`] (the work of a crashed instance was claimed or re-read by then): when they
//!   start, and after each full claim scan.

use std::time::Duration;

use redis::Value;

use crate::error::is_no_group;
use crate::{Inner, RedisTransport};

/// `KEYS[1]` stream, `ARGV[1]` group, `ARGV[2]` consumer: deletes the consumer if it has no
/// pending entry; 1 when deleted, 0 when it owns entries.
const REMOVE_IF_IDLE: &str = "\
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1";

/// A member that owns nothing and has not read for this long is gone: longer than a live
/// consumer's longest pause between two reads (a blocking read and its reply timeout, twice),
/// and never shorter than `claim_idle`, after which its entries are claimed anyway.
pub(super) fn prune_after(inner: &Inner, claim_idle: Duration) -> Duration {
    let read = inner.options.block + inner.options.response_timeout;
    claim_idle.max(read * 2)
}

/// Removes `consumer` from `group` if it owns no pending entry. True when it was removed.
pub(super) async fn remove_if_idle(
    inner: &Inner,
    stream: &str,
    group: &str,
    consumer: &str,
) -> redis::RedisResult<bool> {
    let mut conn = inner.publisher.clone();
    let removed: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg(REMOVE_IF_IDLE)
        .arg(1)
        .arg(stream)
        .arg(group)
        .arg(consumer)
        .query_async(&mut conn)
        .await;
    match removed {
        Ok(n) => Ok(n == 1),
        // The group is gone, and its members with it.
        Err(e) if is_no_group(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the members of `group` other than `own` that own nothing and have been idle longer
/// than `after`. Best effort: a failure is logged and tried again at the next occasion.
pub(super) async fn prune(
    inner: &std::sync::Arc<Inner>,
    stream: &str,
    group: &str,
    own: &str,
    after: Duration,
) {
    let transport = RedisTransport {
        inner: inner.clone(),
    };
    let members = match transport.consumers(stream, group).await {
        Ok(members) => members,
        Err(e) => {
            tracing::debug!(%stream, %group, error = %e, "cannot list the consumers of a group");
            return;
        }
    };
    for member in members {
        if member.name == own || member.pending > 0 || member.idle <= after {
            continue;
        }
        match remove_if_idle(inner, stream, group, &member.name).await {
            Ok(true) => {
                tracing::info!(%stream, %group, consumer = %member.name, idle = ?member.idle, "removed a consumer that is gone and owns nothing");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(%stream, %group, consumer = %member.name, error = %e, "cannot remove a consumer that is gone");
                return;
            }
        }
    }
}

/// What a consumer group has not handled yet: entries never delivered (lag) plus entries
/// delivered and not acknowledged (pending). When Redis cannot tell the lag (`XINFO GROUPS`
/// answers nil after deletions inside the group's range), an entry after the group's last
/// delivered one counts as 1. `None` when the group does not exist.
pub(crate) async fn backlog(
    transport: &RedisTransport,
    stream: &str,
    group: &str,
) -> eventbus_core::Result<Option<u64>> {
    let groups = transport.groups(stream).await?;
    let Some(info) = groups.into_iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    let lag = match info.lag {
        Some(lag) => lag,
        None => {
            let mut conn = transport.inner.publisher.clone();
            let next: Value = redis::cmd("XRANGE")
                .arg(stream)
                .arg(format!("({}", info.last_delivered_id))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .map_err(|e| {
                    crate::error::command_failed(format!("XRANGE of stream \"{stream}\""), e)
                })?;
            u64::from(matches!(next, Value::Array(ref items) if !items.is_empty()))
        }
    };
    Ok(Some(lag + info.pending))
}
