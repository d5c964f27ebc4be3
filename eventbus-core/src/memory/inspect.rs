//! Introspection: what `XLEN`, `XRANGE`, `XINFO GROUPS`, `XPENDING` and `PUBSUB` would show.
//! Tests, the `testing` helpers and operators' tools read the store through these.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{MemoryTransport, lock};

/// A consumer group of a stream, as `XINFO GROUPS` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group name.
    pub name: String,
    /// Consumer names that ever read from the group (`XINFO GROUPS` `consumers`).
    pub consumers: usize,
    /// Entries handed to a consumer and not acknowledged yet.
    pub pending: usize,
    /// The id of the last entry handed to a consumer of the group (`0-0` before the first).
    pub last_delivered_id: String,
    /// Entries still in the stream that no consumer of the group has been handed yet.
    pub lag: usize,
}

/// One entry of a group's pending entries list, as `XPENDING key group - + count` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInfo {
    /// The stream entry id.
    pub id: String,
    /// The consumer that holds it.
    pub consumer: String,
    /// How many times it was delivered.
    pub delivery_count: u32,
    /// Time since it was last delivered.
    pub idle: Duration,
}

impl MemoryTransport {
    /// Number of entries in stream `key` (`XLEN`); 0 for a stream that does not exist.
    pub fn stream_len(&self, key: &str) -> usize {
        lock(&self.shared.streams)
            .get(key)
            .map_or(0, |s| s.entries.len())
    }

    /// Every entry of stream `key`, oldest first (`XRANGE key - +`): ids and fields.
    pub fn stream_entries(&self, key: &str) -> Vec<(String, Vec<(String, Bytes)>)> {
        lock(&self.shared.streams)
            .get(key)
            .map_or_else(Vec::new, |s| {
                s.entries
                    .iter()
                    .map(|e| (e.id.text(), e.owned_fields()))
                    .collect()
            })
    }

    /// Every stream key that exists (created by a publish, a consumer or a dead letter), sorted.
    pub fn streams(&self) -> Vec<String> {
        lock(&self.shared.streams).keys()
    }

    /// The consumer groups of stream `key`, in creation order (`XINFO GROUPS`).
    pub fn groups(&self, key: &str) -> Vec<GroupInfo> {
        let streams = lock(&self.shared.streams);
        let Some(stream) = streams.get(key) else {
            return Vec::new();
        };
        stream
            .groups
            .iter()
            .map(|g| GroupInfo {
                name: g.name.clone(),
                consumers: g.consumers.len(),
                pending: g.pel.len(),
                last_delivered_id: g.last_delivered.text(),
                lag: stream.count_after(g.last_delivered),
            })
            .collect()
    }

    /// The pending entries of `group` on stream `key`, oldest id first (`XPENDING`).
    pub fn pending(&self, key: &str, group: &str) -> Vec<PendingInfo> {
        let now = Instant::now();
        let streams = lock(&self.shared.streams);
        let Some(g) = streams
            .get(key)
            .and_then(|s| s.groups.iter().find(|g| g.name == group))
        else {
            return Vec::new();
        };
        g.pel
            .iter()
            .map(|(id, p)| PendingInfo {
                id: id.text(),
                consumer: g.consumers[p.consumer as usize].clone(),
                delivery_count: p.delivery_count,
                idle: now.saturating_duration_since(p.delivered_at),
            })
            .collect()
    }

    /// Subscriptions to exactly `channel` (`PUBSUB NUMSUB channel`); pattern subscriptions
    /// are not counted.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.shared.pubsub.subscriber_count(channel)
    }

    /// Distinct patterns with at least one subscription (`PUBSUB NUMPAT`).
    pub fn pattern_count(&self) -> usize {
        self.shared.pubsub.pattern_count()
    }

    /// Channels with at least one exact subscription, sorted (`PUBSUB CHANNELS`).
    pub fn channels(&self) -> Vec<String> {
        self.shared.pubsub.channels()
    }
}
