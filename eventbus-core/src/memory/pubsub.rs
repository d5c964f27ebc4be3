//! Pub/sub as Redis does it: `PUBLISH` hands a message to every subscriber of the channel and
//! to every pattern subscriber whose glob matches, at most once, and stores nothing.
//!
//! Each subscription has the bounded drop-oldest buffer every transport uses
//! ([`SubscriberQueue`], the stand-in for a Redis client's output buffer): a subscriber that does
//! not keep up loses its oldest messages, and every loss is counted in `Stats::dropped` and
//! warned about at a bounded rate.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Connection, Shared, lock};
use crate::activity::Activity;
use crate::channel::glob_match;
use crate::envelope::WireBody;
use crate::error::{Error, Result};
use crate::queue::SubscriberQueue;
use crate::transport::{Delivery, SubscribeSpec, Subscription, Target};

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
    queue: Arc<SubscriberQueue>,
}

impl Slot {
    /// Queues one message; false when the subscription is closed.
    fn offer(&self, channel: &str, body: &Bytes, activity: &Activity) -> bool {
        let delivery = Delivery {
            channel: channel.to_owned(),
            body: WireBody::Json(body.clone()),
            entry_id: None,
            delivery_count: 1,
            token: Some(activity.token()),
        };
        // Dropped deliveries take their activity tokens with them: the count of pending work
        // falls.
        self.queue.offer(delivery, body.len())
    }
}

impl PubSub {
    /// `PUBLISH channel body`: returns how many subscribers received it, counted as Redis
    /// counts them: each connection subscribed to the channel once, plus each connection once
    /// per matching pattern it subscribed to (however many handlers share that subscription).
    pub(super) fn publish(&self, channel: &str, body: &Bytes, activity: &Activity) -> u64 {
        let registry = lock(&self.registry);
        let mut receivers: BTreeSet<(u64, Option<&str>)> = BTreeSet::new();
        if let Some(slots) = registry.channels.get(channel) {
            for slot in slots {
                if slot.offer(channel, body, activity) {
                    receivers.insert((slot.conn, None));
                }
            }
        }
        for slot in &registry.patterns {
            let pattern = slot.queue.target().as_str();
            if glob_match(pattern, channel) && slot.offer(channel, body, activity) {
                receivers.insert((slot.conn, Some(pattern)));
            }
        }
        receivers.len() as u64
    }

    /// `SUBSCRIBE` / `PSUBSCRIBE`.
    pub(super) fn subscribe(
        shared: &Arc<Shared>,
        conn: &Connection,
        spec: SubscribeSpec,
    ) -> Result<MemorySubscription> {
        let queue = Arc::new(SubscriberQueue::new(&spec));
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
            queue: queue.clone(),
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
            .map(|s| s.queue.target().as_str())
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
    queue: Arc<SubscriberQueue>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Delivery> {
        self.queue.next().await
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        // Messages still buffered go with the queue, and their activity tokens with them.
        self.shared.pubsub.unsubscribe(self.id, &self.target);
    }
}
