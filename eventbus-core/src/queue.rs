//! The buffer between a pub/sub connection and a slow subscriber, the same for every transport:
//! a queue bounded in messages and in bytes that drops its oldest messages when full, never
//! grows without bound and never blocks the producer ([`DropOldestQueue`]), and the
//! subscriber's side of it ([`SubscriberQueue`]), which counts every drop in `Stats::dropped`
//! and warns about it at a bounded rate, naming the limit that was hit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::stats::Stats;
use crate::transport::{Delivery, SubscribeSpec, Target};

/// How many of the oldest items one push dropped, by the limit that made room necessary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overflow {
    /// Dropped because the queue held its maximum number of items.
    pub at_item_limit: usize,
    /// Dropped because the new item would have taken the queue past its byte limit.
    pub at_byte_limit: usize,
}

impl Overflow {
    /// Items dropped in all.
    pub fn total(&self) -> usize {
        self.at_item_limit + self.at_byte_limit
    }
}

/// Bounded multi-producer, single-consumer queue with drop-oldest overflow.
#[derive(Debug)]
pub struct DropOldestQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    closed: bool,
}

impl<T> DropOldestQueue<T> {
    /// A queue holding at most `capacity` items (at least 1), of any size.
    pub fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, usize::MAX)
    }

    /// A queue holding at most `capacity` items (at least 1) and, besides the newest item,
    /// at most `max_bytes` bytes as weighed by the producer.
    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        DropOldestQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `item`, which weighs `bytes`. Returns how many of the oldest items were dropped
    /// to make room, by limit (they are dropped here, after the lock is released), or
    /// `Err(item)` when the queue is closed. The newest item is always kept, however large.
    pub fn push(&self, item: T, bytes: usize) -> Result<Overflow, T> {
        let mut dropped = Vec::new();
        let mut overflow = Overflow::default();
        {
            let mut s = self.lock();
            if s.closed {
                return Err(item);
            }
            loop {
                if s.items.is_empty() {
                    break;
                }
                if s.items.len() >= self.capacity {
                    overflow.at_item_limit += 1;
                } else if s.bytes.saturating_add(bytes) > self.max_bytes {
                    overflow.at_byte_limit += 1;
                } else {
                    break;
                }
                if let Some((old, weight)) = s.items.pop_front() {
                    s.bytes -= weight;
                    dropped.push(old);
                }
            }
            s.bytes += bytes;
            s.items.push_back((item, bytes));
        }
        self.ready.notify_one();
        drop(dropped);
        Ok(overflow)
    }

    /// Takes the oldest item, waiting for one; `None` once closed and empty.
    pub async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(item) = s.take() {
                    return Some(item);
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Takes the oldest item if there is one.
    pub fn try_pop(&self) -> Option<T> {
        self.lock().take()
    }

    /// Closes the queue: pushes fail, `pop` drains what is left then returns `None`.
    /// Returns the items still queued.
    pub fn close(&self) -> usize {
        let n = {
            let mut s = self.lock();
            s.closed = true;
            s.items.len()
        };
        self.ready.notify_waiters();
        self.ready.notify_one();
        n
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// At most one warning about a subscriber's drops in this interval; drops in between are
/// counted at once (`Stats::dropped`) and summed up in the next warning.
pub const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// The buffer of one pub/sub subscriber, fed by its transport's connection and read by its
/// dispatcher. Every transport uses this one, so the limits, the drop counts and the warning
/// are the same on all of them.
#[derive(Debug)]
pub struct SubscriberQueue {
    queue: DropOldestQueue<Delivery>,
    target: Target,
    stats: Arc<Stats>,
    warning: Mutex<DropWarning>,
}

impl SubscriberQueue {
    /// The buffer of a subscription to `spec.target`, with its limits and its counters.
    pub fn new(spec: &SubscribeSpec) -> Self {
        SubscriberQueue {
            queue: DropOldestQueue::with_max_bytes(spec.capacity, spec.capacity_bytes),
            target: spec.target.clone(),
            stats: spec.stats.clone(),
            warning: Mutex::new(DropWarning::new(spec.capacity.max(1), spec.capacity_bytes)),
        }
    }

    /// Queues a message of `bytes` payload bytes. When the buffer is full its oldest messages
    /// are dropped, counted and warned about. Returns false when the subscription is closed.
    pub fn offer(&self, delivery: Delivery, bytes: usize) -> bool {
        match self.queue.push(delivery, bytes) {
            Ok(overflow) => {
                if overflow.total() > 0 {
                    self.dropped(overflow);
                }
                true
            }
            Err(_closed) => false,
        }
    }

    fn dropped(&self, overflow: Overflow) {
        Stats::add(&self.stats.dropped, overflow.total() as u64);
        let warning = self
            .warning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(overflow, Instant::now());
        if let Some(text) = warning {
            tracing::warn!(subscription = %self.target.as_str(), "{text}");
        }
    }

    /// The next message, waiting for one; `None` once closed and drained.
    pub async fn next(&self) -> Option<Delivery> {
        self.queue.pop().await
    }

    /// Ends the subscription: offers fail, `next` drains what is buffered, then returns `None`.
    pub fn close(&self) {
        self.queue.close();
    }

    /// What the subscription listens to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Where its drops are counted.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Messages buffered now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Payload bytes buffered now.
    pub fn bytes(&self) -> usize {
        self.queue.bytes()
    }
}

/// Drops not warned about yet, and when the last warning was given.
#[derive(Debug)]
struct DropWarning {
    message_limit: usize,
    byte_limit: usize,
    unreported: Overflow,
    last: Option<Instant>,
}

impl DropWarning {
    fn new(message_limit: usize, byte_limit: usize) -> Self {
        DropWarning {
            message_limit,
            byte_limit,
            unreported: Overflow::default(),
            last: None,
        }
    }

    /// Adds drops; returns the warning to give now, at most one per
    /// [`DROP_WARNING_INTERVAL`], naming each limit that dropped messages and how many.
    fn record(&mut self, overflow: Overflow, now: Instant) -> Option<String> {
        self.unreported.at_item_limit += overflow.at_item_limit;
        self.unreported.at_byte_limit += overflow.at_byte_limit;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < DROP_WARNING_INTERVAL)
        {
            return None;
        }
        let since = if self.last.is_some() {
            " since the last warning"
        } else {
            ""
        };
        self.last = Some(now);
        let Overflow {
            at_item_limit,
            at_byte_limit,
        } = std::mem::take(&mut self.unreported);
        let mut causes = Vec::new();
        if at_item_limit > 0 {
            causes.push(format!(
                "{at_item_limit} at its limit of {} messages (subscriber_capacity)",
                self.message_limit
            ));
        }
        if at_byte_limit > 0 {
            causes.push(format!(
                "{at_byte_limit} at its limit of {} bytes (subscriber_capacity_bytes)",
                self.byte_limit
            ));
        }
        Some(format!(
            "a pub/sub subscriber is not keeping up: {} of its oldest buffered messages dropped{since}: {}",
            at_item_limit + at_byte_limit,
            causes.join(" and ")
        ))
    }
}

impl<T> State<T> {
    fn take(&mut self) -> Option<T> {
        let (item, weight) = self.items.pop_front()?;
        self.bytes -= weight;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_drops_the_oldest() {
        let q = DropOldestQueue::new(2);
        assert_eq!(q.push(1, 0), Ok(Overflow::default()));
        assert_eq!(q.push(2, 0), Ok(Overflow::default()));
        let one = Overflow {
            at_item_limit: 1,
            at_byte_limit: 0,
        };
        assert_eq!(q.push(3, 0), Ok(one));
        assert_eq!(q.pop().await, Some(2));
        assert_eq!(q.pop().await, Some(3));
        q.close();
        assert_eq!(q.pop().await, None);
        assert_eq!(q.push(4, 0), Err(4));
    }

    #[tokio::test]
    async fn bytes_are_bounded_too() {
        let q = DropOldestQueue::with_max_bytes(100, 10);
        let by_bytes = |n| {
            Ok(Overflow {
                at_item_limit: 0,
                at_byte_limit: n,
            })
        };
        assert_eq!(q.push("a", 4), by_bytes(0));
        assert_eq!(q.push("b", 4), by_bytes(0));
        assert_eq!(q.bytes(), 8);
        // 8 + 6 > 10: the oldest goes.
        assert_eq!(q.push("c", 6), by_bytes(1));
        assert_eq!((q.len(), q.bytes()), (2, 10));
        // Larger than the whole bound: everything else goes, the newest stays.
        assert_eq!(q.push("d", 50), by_bytes(2));
        assert_eq!((q.len(), q.bytes()), (1, 50));
        assert_eq!(q.pop().await, Some("d"));
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn drop_warnings_name_the_limit_and_come_at_a_bounded_rate() {
        let mut w = DropWarning::new(4, 1024);
        let t0 = Instant::now();
        let items = |n| Overflow {
            at_item_limit: n,
            at_byte_limit: 0,
        };
        let first = w
            .record(items(2), t0)
            .expect("the first drop is warned about at once");
        assert!(first.contains("2 of its oldest"), "{first}");
        assert!(first.contains("2 at its limit of 4 messages"), "{first}");
        assert!(!first.contains("bytes"), "{first}");
        // Within the interval: counted, not warned about.
        assert_eq!(w.record(items(3), t0 + Duration::from_secs(1)), None);
        let bytes = Overflow {
            at_item_limit: 0,
            at_byte_limit: 7,
        };
        assert_eq!(w.record(bytes, t0 + Duration::from_secs(2)), None);
        let next = w
            .record(items(1), t0 + DROP_WARNING_INTERVAL)
            .expect("a warning once the interval passed");
        assert!(next.contains("11 of its oldest"), "{next}");
        assert!(next.contains("since the last warning"), "{next}");
        assert!(
            next.contains("4 at its limit of 4 messages")
                && next.contains("7 at its limit of 1024 bytes"),
            "{next}"
        );
    }
}
