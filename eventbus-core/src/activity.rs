//! A count of work that is queued or in flight, for `Bus::settle`.
//!
//! A transport adds to it when it queues a message for a subscriber or a group, and takes away
//! when the message was handled (acked, dead-lettered) or dropped. A message on its way from a
//! queue to a handler carries an [`ActivityToken`], so the count never reads zero in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Shared counter of outstanding work with a wake-up when it reaches zero.
#[derive(Clone, Debug, Default)]
pub struct Activity(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

impl Activity {
    /// A new counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` units of work.
    pub fn add(&self, n: usize) {
        if n > 0 {
            self.0.count.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Removes `n` units of work.
    pub fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.0.count.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "activity count underflow");
        if before == n {
            self.0.idle.notify_waiters();
        }
    }

    /// Adds one unit, taken away when the token is dropped.
    pub fn token(&self) -> ActivityToken {
        self.add(1);
        ActivityToken(self.clone())
    }

    /// Wraps one unit that was already added; it is taken away when the token is dropped.
    pub fn adopt(&self) -> ActivityToken {
        ActivityToken(self.clone())
    }

    /// Outstanding units.
    pub fn get(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Waits until the count is zero.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One unit of work; dropping it marks the work done.
#[derive(Debug)]
pub struct ActivityToken(Activity);

impl Drop for ActivityToken {
    fn drop(&mut self) {
        self.0.sub(1);
    }
}
