//! What an operator wants to know about a running bus: pub/sub channels and their subscribers,
//! stream lengths, consumer groups, their members and pending entries.
//!
//! Keys and channels here are physical names: pass them with the bus namespace
//! ([`Bus::key`](eventbus_core::Bus::key), [`Bus::channel_of`](eventbus_core::Bus::channel_of)).
//! Groups and consumers come in the types the memory transport answers with too
//! ([`eventbus_core::inspect`]).

use std::time::Duration;

use eventbus_core::Result;
use eventbus_core::inspect::{ConsumerInfo, GroupInfo};
use redis::Value;

use crate::RedisTransport;
use crate::error::{command_failed, is_no_such_key, unexpected};
use crate::reply;

fn field_u64(fields: &[(String, Value)], name: &str) -> Option<u64> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| reply::int(v))
        .and_then(|n| u64::try_from(n).ok())
}

fn field_text(fields: &[(String, Value)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| reply::text(v))
}

fn list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

impl RedisTransport {
    async fn query(&self, cmd: &redis::Cmd, what: impl FnOnce() -> String) -> Result<Value> {
        let mut conn = self.inner.publisher.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| command_failed(what(), e))
    }

    /// Pub/sub channels with at least one subscriber that match a glob `pattern` (`*` for
    /// all), sorted (`PUBSUB CHANNELS`). Pattern subscriptions are not channels: see
    /// [`pattern_count`](Self::pattern_count).
    pub async fn channels(&self, pattern: &str) -> Result<Vec<String>> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("CHANNELS").arg(pattern);
        let value = self
            .query(&cmd, || format!("PUBSUB CHANNELS {pattern}"))
            .await?;
        let mut out: Vec<String> = list(value).iter().filter_map(reply::text).collect();
        out.sort();
        Ok(out)
    }

    /// The number of subscribers of each channel, in the order given (`PUBSUB NUMSUB`).
    /// Subscribers through a pattern are not counted.
    pub async fn subscriber_counts(&self, channels: &[&str]) -> Result<Vec<(String, u64)>> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB").arg(channels);
        let value = self
            .query(&cmd, || {
                format!("PUBSUB NUMSUB of {} channels", channels.len())
            })
            .await?;
        let pairs = reply::pairs(value)
            .ok_or_else(|| unexpected("PUBSUB NUMSUB: unexpected reply shape"))?;
        Ok(pairs
            .into_iter()
            .map(|(channel, n)| {
                let n = reply::int(&n)
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0);
                (channel, n)
            })
            .collect())
    }

    /// The number of distinct patterns subscribed to on the server (`PUBSUB NUMPAT`).
    pub async fn pattern_count(&self) -> Result<u64> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMPAT");
        let value = self.query(&cmd, || "PUBSUB NUMPAT".to_owned()).await?;
        reply::int(&value)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| unexpected(format!("PUBSUB NUMPAT: unexpected reply {value:?}")))
    }

    /// The number of entries in a stream, 0 when it does not exist (`XLEN`).
    pub async fn stream_len(&self, stream: &str) -> Result<u64> {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(stream);
        let value = self
            .query(&cmd, || format!("XLEN of stream \"{stream}\""))
            .await?;
        reply::int(&value)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| unexpected(format!("XLEN of \"{stream}\": unexpected reply {value:?}")))
    }

    /// The consumer groups of a stream, empty when the stream does not exist
    /// (`XINFO GROUPS`).
    pub async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let records = self
            .xinfo(
                &["GROUPS", stream],
                format!("XINFO GROUPS of stream \"{stream}\""),
            )
            .await?;
        Ok(records
            .iter()
            .map(|f| GroupInfo {
                name: field_text(f, "name").unwrap_or_default(),
                consumers: field_u64(f, "consumers").unwrap_or(0),
                pending: field_u64(f, "pending").unwrap_or(0),
                last_delivered_id: field_text(f, "last-delivered-id").unwrap_or_default(),
                lag: field_u64(f, "lag"),
            })
            .collect())
    }

    /// The members of a consumer group, empty when the stream does not exist
    /// (`XINFO CONSUMERS`).
    pub async fn consumers(&self, stream: &str, group: &str) -> Result<Vec<ConsumerInfo>> {
        let what = format!("XINFO CONSUMERS of group \"{group}\" on stream \"{stream}\"");
        let records = self.xinfo(&["CONSUMERS", stream, group], what).await?;
        Ok(records
            .iter()
            .map(|f| ConsumerInfo {
                name: field_text(f, "name").unwrap_or_default(),
                pending: field_u64(f, "pending").unwrap_or(0),
                idle: Duration::from_millis(field_u64(f, "idle").unwrap_or(0)),
            })
            .collect())
    }

    /// Runs an `XINFO` subcommand that answers a list of records; a missing stream is an empty
    /// list. `what` names the command and its keys in errors.
    async fn xinfo(&self, args: &[&str], what: String) -> Result<Vec<Vec<(String, Value)>>> {
        let mut cmd = redis::cmd("XINFO");
        for arg in args {
            cmd.arg(*arg);
        }
        let mut conn = self.inner.publisher.clone();
        let value: Value = match cmd.query_async(&mut conn).await {
            Ok(v) => v,
            Err(e) if is_no_such_key(&e) => return Ok(Vec::new()),
            Err(e) => return Err(command_failed(what, e)),
        };
        list(value)
            .into_iter()
            .map(|record| {
                reply::pairs(record)
                    .ok_or_else(|| unexpected(format!("{what}: unexpected reply shape")))
            })
            .collect()
    }

    /// Entries delivered to the group's members and not acknowledged yet (`XPENDING`
    /// summary form).
    pub async fn pending_count(&self, stream: &str, group: &str) -> Result<u64> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(group);
        let value = self
            .query(&cmd, || {
                format!("XPENDING of group \"{group}\" on stream \"{stream}\"")
            })
            .await?;
        list(value)
            .first()
            .and_then(reply::int)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| unexpected(format!("XPENDING of \"{stream}\": unexpected reply shape")))
    }
}
