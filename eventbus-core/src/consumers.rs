//! What a bus knows about its own consumer groups: the consumer name its members use (leased,
//! see [`identity`](crate::identity)) and the (stream, group) pairs it consumes, whose backlog
//! [`testing::settle`](crate::testing::settle) waits for.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::Engine;
use crate::identity::Identity;
use crate::transport::ConsumeMode;

/// How often `settle` asks the transport for the backlog of the bus's groups.
const BACKLOG_POLL: Duration = Duration::from_millis(10);

/// The durable consumers of one bus.
#[derive(Default)]
pub(crate) struct Consumers {
    identity: tokio::sync::OnceCell<Identity>,
    /// Consumer groups running in this bus, with how many handlers consume each.
    groups: Mutex<BTreeMap<(String, String), usize>>,
    /// The backlog `settle` saw last, for its error message.
    last_backlog: AtomicU64,
}

impl Consumers {
    fn groups(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), usize>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consumer of `group` on `stream` started (broadcast readers are not counted: what they
    /// have left to read is known to nobody).
    pub(crate) fn started(&self, stream: String, group: &str, mode: ConsumeMode) {
        if mode == ConsumeMode::Group {
            *self.groups().entry((stream, group.to_owned())).or_insert(0) += 1;
        }
    }

    /// A consumer started with [`Consumers::started`] stopped.
    pub(crate) fn stopped(&self, stream: String, group: &str, mode: ConsumeMode) {
        if mode != ConsumeMode::Group {
            return;
        }
        let mut groups = self.groups();
        let key = (stream, group.to_owned());
        if let Some(n) = groups.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                groups.remove(&key);
            }
        }
    }

    /// The (stream, group) pairs with a consumer still running.
    pub(crate) fn running(&self) -> Vec<(String, String)> {
        self.groups().keys().cloned().collect()
    }

    /// The consumer name in use, once the first group consumer started.
    pub(crate) fn name(&self) -> Option<&str> {
        self.identity.get().map(|identity| identity.name.as_str())
    }

    /// The backlog seen by the last [`backlog_drained`] that found one.
    pub(crate) fn last_backlog(&self) -> u64 {
        self.last_backlog.load(Ordering::Relaxed)
    }
}

/// The consumer name of a new consumer of `bus`: in group mode the leased name (claimed by the
/// first one), in broadcast mode the instance name (a broadcast reader has no name in Redis).
pub(crate) async fn consumer_name(engine: &Engine, mode: ConsumeMode) -> String {
    if mode == ConsumeMode::Broadcast {
        return engine.config().instance.clone();
    }
    engine
        .consumers()
        .identity
        .get_or_init(|| {
            Identity::claim(
                engine.transport().clone(),
                &engine.config().instance,
                engine.config().consumer_lease_ttl,
                |name| engine.key(&format!("eventbus.instance:{name}")),
            )
        })
        .await
        .name
        .clone()
}

/// Releases the consumer name's lease: the last step of a graceful shutdown, after every
/// consumer acked and left its group.
pub(crate) async fn release(engine: &Engine) {
    if let Some(identity) = engine.consumers().identity.get() {
        identity.release().await;
    }
}

/// True when every consumer group of the bus has handled everything in its stream (no lag, no
/// pending entries), as far as the transport can tell. Otherwise false, after a short pause:
/// the caller asks again.
pub(crate) async fn backlog_drained(engine: &Engine) -> bool {
    let groups: Vec<(String, String)> = engine.consumers().groups().keys().cloned().collect();
    let mut left = 0u64;
    for (stream, group) in &groups {
        match engine.transport().backlog(stream, group).await {
            Ok(n) => left += n.unwrap_or(0),
            Err(e) => {
                tracing::debug!(%stream, %group, error = %e, "cannot read the backlog of a consumer group");
                left += 1;
            }
        }
    }
    engine
        .consumers()
        .last_backlog
        .store(left, Ordering::Relaxed);
    if left > 0 {
        tokio::time::sleep(BACKLOG_POLL).await;
    }
    left == 0
}
