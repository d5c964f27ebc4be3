//! A bounded queue that drops its oldest items when full: the buffer between a pub/sub
//! connection and a slow subscriber. Bounded in items and in bytes, it never grows without
//! bound and never blocks the producer.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

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
    /// to make room (dropped here, after the lock is released), or `Err(item)` when the queue
    /// is closed. The newest item is always kept, however large.
    pub fn push(&self, item: T, bytes: usize) -> Result<usize, T> {
        let mut dropped = Vec::new();
        {
            let mut s = self.lock();
            if s.closed {
                return Err(item);
            }
            while !s.items.is_empty()
                && (s.items.len() >= self.capacity
                    || s.bytes.saturating_add(bytes) > self.max_bytes)
            {
                if let Some((old, weight)) = s.items.pop_front() {
                    s.bytes -= weight;
                    dropped.push(old);
                }
            }
            s.bytes += bytes;
            s.items.push_back((item, bytes));
        }
        self.ready.notify_one();
        Ok(dropped.len())
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
        assert_eq!(q.push(1, 0), Ok(0));
        assert_eq!(q.push(2, 0), Ok(0));
        assert_eq!(q.push(3, 0), Ok(1));
        assert_eq!(q.pop().await, Some(2));
        assert_eq!(q.pop().await, Some(3));
        q.close();
        assert_eq!(q.pop().await, None);
        assert_eq!(q.push(4, 0), Err(4));
    }

    #[tokio::test]
    async fn bytes_are_bounded_too() {
        let q = DropOldestQueue::with_max_bytes(100, 10);
        assert_eq!(q.push("a", 4), Ok(0));
        assert_eq!(q.push("b", 4), Ok(0));
        assert_eq!(q.bytes(), 8);
        // 8 + 6 > 10: the oldest goes.
        assert_eq!(q.push("c", 6), Ok(1));
        assert_eq!((q.len(), q.bytes()), (2, 10));
        // Larger than the whole bound: everything else goes, the newest stays.
        assert_eq!(q.push("d", 50), Ok(2));
        assert_eq!((q.len(), q.bytes()), (1, 50));
        assert_eq!(q.pop().await, Some("d"));
        assert_eq!(q.bytes(), 0);
    }
}
