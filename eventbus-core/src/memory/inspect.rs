//! Introspection: what `XLEN`, `XRANGE`, `XINFO GROUPS`, `XINFO CONSUMERS`, `XPENDING` and
//! `PUBSUB` would show, in the types the Redis transport answers with too
//! ([`crate::inspect`]). Tests and operators' tools read the store through these.

use bytes::Bytes;
use tokio::time::Instant;

use super::{MemoryTransport, lock};
use crate::inspect::{ConsumerInfo, GroupInfo, PendingInfo};

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
                consumers: g.member.iter().filter(|m| **m).count() as u64,
                pending: g.pel.len() as u64,
                last_delivered_id: g.last_delivered.text(),
                lag: Some(stream.count_after(g.last_delivered) as u64),
            })
            .collect()
    }

    /// The members of `group` on stream `key`, in the order they joined (`XINFO CONSUMERS`);
    /// empty when the stream or group does not exist.
    pub fn consumers(&self, key: &str, group: &str) -> Vec<ConsumerInfo> {
        let now = Instant::now();
        let streams = lock(&self.shared.streams);
        let Some(g) = streams.group(key, group) else {
            return Vec::new();
        };
        g.consumers
            .iter()
            .enumerate()
            .filter(|(i, _)| g.member[*i])
            .map(|(i, name)| ConsumerInfo {
                name: name.clone(),
                pending: g.pel.values().filter(|p| p.consumer as usize == i).count() as u64,
                idle: now.saturating_duration_since(g.last_seen[i]),
            })
            .collect()
    }

    /// The pending entries of `group` on stream `key`, oldest id first (`XPENDING`).
    pub fn pending(&self, key: &str, group: &str) -> Vec<PendingInfo> {
        let now = Instant::now();
        let streams = lock(&self.shared.streams);
        let Some(g) = streams.group(key, group) else {
            return Vec::new();
        };
        g.pel
            .iter()
            .map(|(id, p)| PendingInfo {
                id: id.text(),
                consumer: g.consumers[p.consumer as usize].clone(),
                delivery_count: p.delivery_count,
                idle: now.saturating_duration_since(p.last_active(now)),
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
