//! A bounded queue that drops its oldest item when full: the buffer between a pub/sub
//! connection and a slow subscriber. It never grows without bound and never blocks the producer.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Bounded multi-producer, single-consumer queue with drop-oldest overflow.
#[derive(Debug)]
pub struct DropOldestQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> DropOldestQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        DropOldestQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `item`. Returns the item that was dropped to make room, if any, or `Err(item)`
    /// when the queue is closed.
    pub fn push(&self, item: T) -> Result<Option<T>, T> {
        let dropped = {
            let mut s = self.lock();
            if s.closed {
                return Err(item);
            }
            let dropped = if s.items.len() >= self.capacity {
                s.items.pop_front()
            } else {
                None
            };
            s.items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        Ok(dropped)
    }

    /// Takes the oldest item, waiting for one; `None` once closed and empty.
    pub async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(item) = s.items.pop_front() {
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
        self.lock().items.pop_front()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_drops_the_oldest() {
        let q = DropOldestQueue::new(2);
        assert_eq!(q.push(1), Ok(None));
        assert_eq!(q.push(2), Ok(None));
        assert_eq!(q.push(3), Ok(Some(1)));
        assert_eq!(q.pop().await, Some(2));
        assert_eq!(q.pop().await, Some(3));
        q.close();
        assert_eq!(q.pop().await, None);
        assert_eq!(q.push(4), Err(4));
    }
}
