//! The marks of `dedup` handlers (see `eventbus_core::HandlerOptions::dedup`): one string key
//! per handled event and group, `SET <key> 1 PX <ttl>` after the handler succeeded and
//! `EXISTS <key>` before the next call. On the shared publish connection.

use std::time::Duration;

use eventbus_core::Result;
use redis::Value;

use crate::Inner;
use crate::error::{On, command_failed_as, unexpected};
use crate::reply;

/// `EXISTS key`.
pub(crate) async fn seen(inner: &Inner, key: &str) -> Result<bool> {
    let mut conn = inner.publisher.clone();
    let value: Value = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            command_failed_as(
                inner.address.user(),
                "EXISTS",
                On::Key(key),
                format!("EXISTS of dedup mark \"{key}\""),
                e,
            )
        })?;
    reply::int(&value)
        .map(|n| n > 0)
        .ok_or_else(|| unexpected(format!("EXISTS of \"{key}\": unexpected reply {value:?}")))
}

/// `SET key 1 PX ttl` (in milliseconds, at least 1).
pub(crate) async fn mark(inner: &Inner, key: &str, ttl: Duration) -> Result<()> {
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    // Redis refuses an expiry beyond its own limits (`invalid expire time`): about 292 million
    // years is as good as forever.
    let millis = millis.min(i64::MAX as u64 / 2);
    let mut conn = inner.publisher.clone();
    redis::cmd("SET")
        .arg(key)
        .arg(1)
        .arg("PX")
        .arg(millis)
        .query_async::<Value>(&mut conn)
        .await
        .map(drop)
        .map_err(|e| {
            command_failed_as(
                inner.address.user(),
                "SET",
                On::Key(key),
                format!("SET of dedup mark \"{key}\""),
                e,
            )
        })
}
