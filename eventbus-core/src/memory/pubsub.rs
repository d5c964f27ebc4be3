//! Pub/sub as Redis does it: `PUBLISH` hands a message to every subscriber of the channel and
//! to every pattern subscriber whose glob matches, at most once, and stores nothing.
//!
//! Each subscription has a bounded drop-oldest buffer (the stand-in for a Redis client's output
//! buffer): a subscriber that does not keep up loses its oldest messages, and every loss is
//! counted in `Stats::dropped` and logged at most once a second per subscription.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{Connection, Shared, lock};
use crate::activity::Activity;
use crate::channel::glob_match;
use crate::envelope::WireBody;
use crate::error::{Error, Result};
use crate::queue::DropOldestQueue;
use crate::stats::Stats;
use crate::transport::{Delivery, SubscribeSpec, Subscription, Target};

/// How often a subscription that keeps overflowing logs about it.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Every live subscription, by channel and by pattern.
#[derive(Default)]
pub(super) struct PubSub {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    channels: HashMap<String, Vec<Slot>>,
    patterns: Vec<Slot>,
}

/// The transport's side of one subscription.
struct Slot {
    id: u64,
    /// The connection (transport handle) that subscribed; closing it ends the subscription.
    conn: u64,
    target: Target,
    queue: Arc<DropOldestQueue<Delivery>>,
    capacity: usize,
    stats: Arc<Stats>,
    /// Drops not logged yet, and when the last log line was written.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

impl Slot {
    /// Queues one message; returns whether the subscriber received it (1) or not (0).
    fn offer(&mut self, channel: &str, body: &Bytes, activity: &Activity) -> u64 {
        let delivery = Delivery {
            channel: channel.to_owned(),
            body: WireBody::Json(body.clone()),
            entry_id: None,
            delivery_count: 1,
            token: Some(activity.token()),
        };
        match self.queue.push(delivery, body.len()) {
            Ok(0) => 1,
            // The dropped deliveries' tokens go with them: the count of pending work falls.
            Ok(dropped) => {
                for _ in 0..dropped {
                    self.dropped();
                }
                1
            }
            Err(_closed) => 0,
        }
    }

    fn dropped(&mut self) {
        Stats::incr(&self.stats.dropped);
        self.unlogged_drops += 1;
        let now = Instant::now();
        if self
            .last_drop_log
            .is_none_or(|t| now.duration_since(t) >= DROP_LOG_INTERVAL)
        {
            tracing::warn!(
                target_channel = self.target.as_str(),
                dropped = self.unlogged_drops,
                capacity = self.capacity,
                "a pub/sub subscriber is not keeping up: its oldest buffered messages were dropped"
            );
            self.unlogged_drops = 0;
            self.last_drop_log = Some(now);
        }
    }
}

impl PubSub {
    /// `PUBLISH channel body`: returns how many subscriptions received it.
    pub(super) fn publish(&self, channel: &str, body: &Bytes, activity: &Activity) -> u64 {
        let mut registry = lock(&self.registry);
        let registry = &mut *registry;
        let mut receivers = 0;
        if let Some(slots) = registry.channels.get_mut(channel) {
            for slot in slots {
                receivers += slot.offer(channel, body, activity);
            }
        }
        for slot in &mut registry.patterns {
            if glob_match(slot.target.as_str(), channel) {
                receivers += slot.offer(channel, body, activity);
            }
        }
        receivers
    }

    /// `SUBSCRIBE` / `PSUBSCRIBE`.
    pub(super) fn subscribe(
        shared: &Arc<Shared>,
        conn: &Connection,
        spec: SubscribeSpec,
    ) -> Result<MemorySubscription> {
        let queue = Arc::new(DropOldestQueue::with_max_bytes(
            spec.capacity,
            spec.capacity_bytes,
        ));
        let mut registry = lock(&shared.pubsub.registry);
        // Checked under the lock that `close` takes after setting the flag: a subscription is
        // either refused here or ended by `close`.
        if conn.is_closed() {
            return Err(Error::Closed);
        }
        registry.next_id += 1;
        let slot = Slot {
            id: registry.next_id,
            conn: conn.id,
            target: spec.target.clone(),
            queue: queue.clone(),
            capacity: spec.capacity.max(1),
            stats: spec.stats,
            unlogged_drops: 0,
            last_drop_log: None,
        };
        let id = slot.id;
        match &spec.target {
            Target::Channel(c) => registry.channels.entry(c.clone()).or_default().push(slot),
            Target::Pattern(_) => registry.patterns.push(slot),
        }
        Ok(MemorySubscription {
            shared: shared.clone(),
            id,
            target: spec.target,
            queue,
        })
    }

    fn unsubscribe(&self, id: u64, target: &Target) {
        let mut registry = lock(&self.registry);
        match target {
            Target::Channel(c) => {
                if let Some(slots) = registry.channels.get_mut(c) {
                    slots.retain(|s| s.id != id);
                    if slots.is_empty() {
                        registry.channels.remove(c);
                    }
                }
            }
            Target::Pattern(_) => registry.patterns.retain(|s| s.id != id),
        }
    }

    /// Ends every subscription of connection `conn`: their `next()` drains what is buffered and
    /// then returns `None`.
    pub(super) fn close_connection(&self, conn: u64) {
        let mut registry = lock(&self.registry);
        let close = |s: &Slot| {
            if s.conn == conn {
                s.queue.close();
                false
            } else {
                true
            }
        };
        registry.patterns.retain(close);
        registry.channels.retain(|_, slots| {
            slots.retain(close);
            !slots.is_empty()
        });
    }

    /// Subscribers of exactly this channel (`PUBSUB NUMSUB`).
    pub(super) fn subscriber_count(&self, channel: &str) -> usize {
        lock(&self.registry)
            .channels
            .get(channel)
            .map_or(0, Vec::len)
    }

    /// Distinct patterns subscribed to (`PUBSUB NUMPAT`).
    pub(super) fn pattern_count(&self) -> usize {
        let registry = lock(&self.registry);
        let patterns: BTreeSet<&str> = registry
            .patterns
            .iter()
            .map(|s| s.target.as_str())
            .collect();
        patterns.len()
    }

    /// Channels with at least one exact subscriber, sorted (`PUBSUB CHANNELS`).
    pub(super) fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = lock(&self.registry).channels.keys().cloned().collect();
        channels.sort();
        channels
    }
}

/// A live subscription; dropping it unsubscribes.
pub(super) struct MemorySubscription {
    shared: Arc<Shared>,
    id: u64,
    target: Target,
    queue: Arc<DropOldestQueue<Delivery>>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Delivery> {
        self.queue.pop().await
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        // Messages still buffered go with the queue, and their activity tokens with them.
        self.shared.pubsub.unsubscribe(self.id, &self.target);
    }
}
