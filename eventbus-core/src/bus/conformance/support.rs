//! What the rules share: a namespace per rule, buses with the suite's settings, and waiting for
//! conditions instead of sleeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Backend;
use crate::handler::HandlerOptions;
use crate::inspect::GroupInfo;
use crate::testing::{self, DeadLettered};
use crate::transport::{Delivery, StreamConsumer};
use crate::{Bus, BusBuilder, Event};

/// How long a rule waits for a condition before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The `claim_idle` of the suite's buses: short, so that claims happen within a rule.
pub(crate) const CLAIM_IDLE: Duration = Duration::from_millis(500);

/// Handler options with quick retries.
pub(crate) const FAST: HandlerOptions = HandlerOptions::new()
    .backoff(Duration::from_millis(10))
    .backoff_max(Duration::from_millis(20));

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One run of one rule: its own namespace on the backend under test.
pub(crate) struct Setup<'a> {
    backend: &'a dyn Backend,
    namespace: String,
}

impl<'a> Setup<'a> {
    /// A namespace no other rule (in this process or another) uses.
    pub(crate) fn new(backend: &'a dyn Backend, rule: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Setup {
            backend,
            namespace: format!("conformance-{}-{n}-{rule}", std::process::id()),
        }
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A builder with the rule's namespace and the suite's settings: a fixed source, short
    /// claims, and recording on (for `testing::published` on any backend).
    pub(crate) fn builder(&self) -> BusBuilder {
        Bus::builder()
            .namespace(&self.namespace)
            .source("conformance")
            .configure(|c| {
                c.claim_idle = CLAIM_IDLE;
                c.record = Some(true);
            })
    }

    /// A new instance on the backend.
    pub(crate) async fn bus(&self) -> Bus {
        self.bus_from(self.builder()).await
    }

    /// A new instance on the backend, built from `builder`.
    pub(crate) async fn bus_from(&self, builder: BusBuilder) -> Bus {
        match self.backend.bus(builder).await {
            Ok(bus) => bus,
            Err(e) => panic!("the {} backend cannot make a bus: {e}", self.backend.name()),
        }
    }

    /// The consumer groups of `stream`.
    pub(crate) async fn groups(&self, stream: &str) -> Vec<GroupInfo> {
        match self.backend.groups(stream).await {
            Ok(groups) => groups,
            Err(e) => panic!("cannot read the groups of {stream}: {e}"),
        }
    }

    /// Waits until `stream` has `groups` consumer groups and each of them was handed every
    /// entry and acknowledged it: nothing more will be delivered to them.
    pub(crate) async fn drained(&self, stream: &str, groups: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.groups(stream).await;
            if now.len() == groups && now.iter().all(GroupInfo::is_drained) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the groups of {stream} were not drained within {PATIENCE:?}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `XADD stream * fields...` as another producer would.
    pub(crate) async fn add_entry(&self, stream: &str, fields: &[(&str, &[u8])]) -> String {
        match self.backend.add_entry(stream, fields).await {
            Ok(id) => id,
            Err(e) => panic!("cannot add an entry to {stream}: {e}"),
        }
    }

    /// `PUBLISH channel payload` as another producer would.
    pub(crate) async fn publish_raw(&self, channel: &str, payload: &[u8]) -> u64 {
        match self.backend.publish_raw(channel, payload).await {
            Ok(n) => n,
            Err(e) => panic!("cannot publish on {channel}: {e}"),
        }
    }
}

/// Waits until `cond` holds; fails the rule with `what` after [`PATIENCE`].
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the dead-letter stream of `E` holds `n` letters and returns them.
pub(crate) async fn dead_letters<E: Event>(bus: &Bus, n: usize) -> Vec<DeadLettered<E>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let letters = testing::dead_letters::<E>(bus)
            .await
            .expect("the dead letters can be read");
        if letters.len() >= n {
            assert_eq!(letters.len(), n, "more dead letters than expected");
            return letters;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} dead letters of {} after {PATIENCE:?}, expected {n}",
            letters.len(),
            E::DESCRIPTOR.name
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fetches from a consumer until it handed out `n` entries.
pub(crate) async fn fetch(consumer: &dyn StreamConsumer, n: usize) -> Vec<Delivery> {
    let mut got = Vec::new();
    let fetched = tokio::time::timeout(PATIENCE, async {
        while got.len() < n {
            got.extend(consumer.fetch(n - got.len()).await.expect("fetch"));
        }
    })
    .await;
    assert!(
        fetched.is_ok(),
        "{} of {n} entries fetched within {PATIENCE:?}",
        got.len()
    );
    got
}

/// A list that handlers append to and rules read.
#[derive(Debug)]
pub(crate) struct Recorder<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Recorder<T> {
    fn clone(&self) -> Self {
        Recorder(self.0.clone())
    }
}

impl<T> Default for Recorder<T> {
    fn default() -> Self {
        Recorder(Arc::default())
    }
}

impl<T: Clone> Recorder<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A handler that panicked while pushing leaves a consistent list.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, item: T) {
        self.lock().push(item);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn items(&self) -> Vec<T> {
        self.lock().clone()
    }
}

impl<T: Clone + Ord> Recorder<T> {
    pub(crate) fn sorted(&self) -> Vec<T> {
        let mut items = self.items();
        items.sort();
        items
    }
}
