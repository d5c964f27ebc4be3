//! Leases on consumer names (see `eventbus_core::identity`): a string key whose value names the
//! holder, with an expiry. Taking and renewing is one script (compare, then `SET … PX`), so two
//! processes can never both believe they hold it; releasing deletes the key only for its holder.

use std::time::Duration;

use eventbus_core::Result;
use eventbus_core::transport::LeaseState;
use redis::Value;

use crate::Inner;
use crate::error::{On, command_failed_as, unexpected};
use crate::reply;

/// `KEYS[1]` lease, `ARGV[1]` holder, `ARGV[2]` ttl in ms, `ARGV[3]` a holder it may replace
/// (empty: none). Answers `{1, holder, ttl}` when the caller holds it now, `{0, holder, pttl}`
/// when another does.
const HOLD: &str = "\
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] or (ARGV[3] ~= '' and v == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ARGV[1], tonumber(ARGV[2])}
end
return {0, v, redis.call('PTTL', KEYS[1])}";

/// `KEYS[1]` lease, `ARGV[1]` holder: deletes the lease if that holder holds it.
const RELEASE: &str = "\
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Takes or renews the lease `key` for `holder` (see `Transport::hold_lease`).
pub(crate) async fn hold(
    inner: &Inner,
    key: &str,
    holder: &str,
    ttl: Duration,
    replacing: Option<&str>,
) -> Result<LeaseState> {
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(HOLD)
        .arg(1)
        .arg(key)
        .arg(holder)
        .arg(millis)
        .arg(replacing.unwrap_or(""));
    let value = eval(inner, &cmd, key, "lease of a consumer name").await?;
    let parsed = match value {
        Value::Array(items) if items.len() == 3 => {
            let held = reply::int(&items[0]);
            let who = reply::text(&items[1]);
            let ttl = reply::int(&items[2]);
            held.zip(who).zip(ttl)
        }
        _ => None,
    };
    let ((held, who), remaining) = parsed
        .ok_or_else(|| unexpected(format!("EVAL of the lease \"{key}\": unexpected reply")))?;
    Ok(if held == 1 {
        LeaseState::Held
    } else {
        LeaseState::HeldBy {
            holder: who,
            // -1: a key without expiry (set by hand); it never expires by itself.
            remaining: Duration::from_millis(u64::try_from(remaining).unwrap_or(0)),
        }
    })
}

/// Deletes the lease `key` if `holder` holds it.
pub(crate) async fn release(inner: &Inner, key: &str, holder: &str) -> Result<()> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RELEASE).arg(1).arg(key).arg(holder);
    eval(inner, &cmd, key, "release of a consumer name's lease")
        .await
        .map(drop)
}

async fn eval(inner: &Inner, cmd: &redis::Cmd, key: &str, what: &str) -> Result<Value> {
    let mut conn = inner.publisher.clone();
    cmd.query_async(&mut conn).await.map_err(|e| {
        command_failed_as(
            inner.address.user(),
            "EVAL",
            On::Key(key),
            format!("EVAL ({what}) on \"{key}\""),
            e,
        )
    })
}
