//! The entries a group consumer handed to the dispatcher and that are not acknowledged yet.
//!
//! Redis cannot tell a slow handler from a dead consumer: both leave an entry idle in the
//! pending list, and after `claim_idle` another consumer claims it and the entry is handled
//! twice at once. So the consumer renews its entries (`XCLAIM … JUSTID` resets the idle time
//! without counting a delivery) for as long as they are in flight here, and its own claim scans
//! skip them.
//!
//! The renewal is a lease with an end: an entry the dispatcher keeps without acknowledging it
//! (its dead letter could not be written) must eventually be delivered again. After
//! [`IN_FLIGHT_LEASE_FACTOR`] × `claim_idle` (core's bound, shared by every transport) an entry
//! is no longer renewed nor protected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use eventbus_core::transport::IN_FLIGHT_LEASE_FACTOR;
use tokio::time::Instant;

pub(super) struct InFlight {
    entries: Mutex<HashMap<String, Instant>>,
    max_lease: Duration,
}

impl InFlight {
    pub(super) fn new(claim_idle: Duration) -> Self {
        InFlight {
            entries: Mutex::new(HashMap::new()),
            max_lease: claim_idle.saturating_mul(IN_FLIGHT_LEASE_FACTOR),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A map of ids and instants stays consistent whatever panicked while it was held.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records entries handed to the dispatcher now.
    pub(super) fn insert<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut entries = self.lock();
        for id in ids {
            entries.insert(id.to_owned(), now);
        }
    }

    /// Forgets acknowledged entries.
    pub(super) fn remove(&self, ids: &[String]) {
        let mut entries = self.lock();
        for id in ids {
            entries.remove(id);
        }
    }

    /// Forgets everything (the group was recreated: these entries are gone).
    pub(super) fn clear(&self) {
        self.lock().clear();
    }

    /// True while `id` is in flight here and its lease has not ended.
    pub(super) fn protects(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|since| since.elapsed() < self.max_lease)
    }

    /// The entries to renew now; entries whose lease ended are dropped from the table.
    pub(super) fn renewable(&self) -> Vec<String> {
        let mut entries = self.lock();
        entries.retain(|_, since| since.elapsed() < self.max_lease);
        entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_ends_after_ten_claim_periods() {
        let f = InFlight::new(Duration::from_secs(1));
        f.insert(["1-0", "2-0"]);
        assert!(f.protects("1-0"));
        f.remove(&["2-0".to_owned()]);
        assert_eq!(f.renewable(), vec!["1-0".to_owned()]);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!f.protects("1-0"));
        assert!(f.renewable().is_empty());
    }
}
