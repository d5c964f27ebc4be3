//! The marks of `dedup` handlers, in process: what Redis does with `SET key 1 PX ttl` and
//! `EXISTS key` (see [`HandlerOptions::dedup`](crate::HandlerOptions::dedup)).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::lock;

/// Below this many keys the map is not swept.
const MIN_SWEEP: usize = 1024;

/// Keys with the instant they expire. An expired key is dropped when it is read, and every
/// key is checked whenever the map doubled since the last sweep: the map holds at most about
/// twice the live keys, and each insert costs O(1) amortized.
#[derive(Default)]
pub(super) struct Marks {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, Instant>,
    /// The size at which the next sweep runs.
    sweep_at: usize,
}

impl Marks {
    /// `EXISTS key`: set and not expired.
    pub(super) fn contains(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        match inner.keys.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                inner.keys.remove(key);
                false
            }
            None => false,
        }
    }

    /// `SET key 1 PX ttl`: sets the key, or renews it, until `ttl` from now.
    pub(super) fn insert(&self, key: &str, ttl: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(ttl)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now);
        let mut inner = lock(&self.inner);
        inner.keys.insert(key.to_owned(), until);
        if inner.keys.len() >= inner.sweep_at.max(MIN_SWEEP) {
            inner.keys.retain(|_, until| *until > now);
            inner.sweep_at = inner.keys.len().saturating_mul(2);
        }
    }

    /// The number of keys held, expired ones not swept yet included.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_mark_expires_after_its_ttl() {
        let marks = Marks::default();
        assert!(!marks.contains("a"));
        marks.insert("a", Duration::from_secs(10));
        assert!(marks.contains("a"));
        assert!(!marks.contains("b"));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(marks.contains("a"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!marks.contains("a"));
        assert_eq!(marks.len(), 0, "an expired key is dropped when read");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_marks_are_swept_and_a_huge_ttl_does_not_overflow() {
        let marks = Marks::default();
        for i in 0..MIN_SWEEP {
            marks.insert(&format!("old-{i}"), Duration::from_secs(1));
        }
        marks.insert("forever", Duration::MAX);
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 0..MIN_SWEEP {
            marks.insert(&format!("new-{i}"), Duration::from_secs(60));
        }
        assert!(
            marks.len() <= MIN_SWEEP + 2,
            "expired keys were not swept: {} keys",
            marks.len()
        );
        assert!(marks.contains("forever"));
        assert!(marks.contains("new-0"));
        assert!(!marks.contains("old-0"));
    }
}
