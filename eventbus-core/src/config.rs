//! The settings of a bus and their defaults.

use std::time::Duration;

use crate::transport::StartFrom;

/// Settings of a bus. Build them with [`Bus::builder`](crate::Bus::builder).
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Prefix of every channel and stream key (`staging` -> `staging.shop.orders.OrderCreated`),
    /// to isolate environments and test runs on one Redis.
    pub namespace: Option<String>,
    /// The CloudEvents `source` of published events (default: the binary's name).
    pub source: String,
    /// Name of this instance: the base of its consumer name and reply channel (default:
    /// `<host>-<binary>`). Stable across restarts, so a restarted instance re-reads its own
    /// pending entries at once; a lease keeps two live processes from sharing it (the second
    /// gets `<instance>-2`), see [`Bus::consumer_name`](crate::Bus::consumer_name).
    pub instance: String,
    /// Pub/sub messages buffered per subscriber before the oldest are dropped (default 65,536,
    /// about what Redis itself buffers for a subscriber before it disconnects it).
    pub subscriber_capacity: usize,
    /// Pub/sub payload bytes buffered per subscriber before the oldest messages are dropped
    /// (default 64 MiB): a stalled subscriber of large messages stays bounded in memory.
    pub subscriber_capacity_bytes: usize,
    /// Stream length kept for durable types without `max_len` (default 100,000; `None`: unbounded).
    pub default_max_len: Option<u64>,
    /// Timeout of [`Bus::request`](crate::Bus::request) (default 5 s).
    pub request_timeout: Duration,
    /// Entries pending this long with a dead consumer are claimed by a live one (default 30 s).
    /// Live consumers look for such entries every `claim_idle / 10` (between 100 ms and 30 s),
    /// so an entry is claimed between `claim_idle` and `claim_idle + claim_idle / 10` after its
    /// consumer last read or renewed it.
    pub claim_idle: Duration,
    /// How long a shutdown waits for handler calls in flight before it abandons them (default
    /// 25 s, within the 30 s Kubernetes grants between SIGTERM and SIGKILL). An abandoned
    /// call's entry stays pending under the consumer's name: the next instance of that name
    /// handles it first, another consumer claims it after `claim_idle`.
    pub shutdown_timeout: Duration,
    /// How long the lease on the consumer name lasts unless renewed (default 10 s, at least
    /// 1 s); it is renewed every tenth of it. The longest an instance restarted in another
    /// container or on another machine waits for the name of a predecessor that crashed: a
    /// shorter lease lets a restarted pod go on sooner, at the cost of more renewals. A process
    /// that cannot reach Redis for longer than the lease may lose its name to another (logged).
    pub consumer_lease_ttl: Duration,
    /// Whether [`Bus::run_registered_handlers`](crate::Bus::run_registered_handlers) shuts
    /// down on SIGTERM and SIGINT (Ctrl-C) (default `true`). Turn it off when the application
    /// handles signals itself and stops the bus with
    /// [`Bus::shutdown_token`](crate::Bus::shutdown_token).
    pub shutdown_on_signals: bool,
    /// Where a new consumer group starts (default: the beginning of the stream).
    pub start_from: StartFrom,
    /// Largest accepted payload in bytes, on publish and on receive (default 1 MiB).
    pub max_payload_bytes: usize,
    /// How long [`settle`](crate::testing::settle) waits before it panics (default 30 s).
    pub settle_timeout: Duration,
    /// Keep every published event and handler call for [`testing::published`](crate::testing::published) and [`testing::consumed`](crate::testing::consumed) (default: on for the memory
    /// transport, off otherwise).
    pub record: Option<bool>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            namespace: None,
            source: default_source(),
            instance: crate::identity::default_instance(),
            subscriber_capacity: 65_536,
            subscriber_capacity_bytes: 64 << 20,
            default_max_len: Some(100_000),
            request_timeout: Duration::from_secs(5),
            claim_idle: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(25),
            consumer_lease_ttl: crate::identity::LEASE_TTL,
            shutdown_on_signals: true,
            start_from: StartFrom::Beginning,
            max_payload_bytes: 1024 * 1024,
            settle_timeout: Duration::from_secs(30),
            record: None,
        }
    }
}

fn default_source() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "eventbus".to_owned())
}
