//! Shared pieces of the two benchmark commands (scenarios in README.md): the ~200-byte order
//! event (same struct, same values for both), the command line, the progress counters with
//! bounded waits, latency percentiles and the one-line JSON report of the contender contract.
//!
//! * `raw-redis`: the reference, hand-written redis-rs code (this library has no eventbus in it).
//! * `eventbus-contender`: the same scenarios through eventbus's public API, plus S5 and S6.
//!
//! Run everything with `scripts/bench`. These are benchmarks: nothing here runs in `cargo test`.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
    pub price_cents: u64,
}

/// The order event of the benchmarks: ids, amount, currency, two items, a timestamp. About 210 bytes
/// of JSON. `sent_ns` is the send time in ns since the process epoch ([`now_ns`]), so S2 can
/// measure latency at the subscriber.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub amount_cents: u64,
    pub currency: String,
    pub items: Vec<Item>,
    pub sent_ns: u64,
}

/// The `i`-th order, stamped `sent_ns`.
pub fn order(i: u64, sent_ns: u64) -> Order {
    Order {
        order_id: format!("ord-{i:012}"),
        customer_id: "cus-0000004711".to_owned(),
        amount_cents: 4999,
        currency: "EUR".to_owned(),
        items: vec![
            Item {
                sku: "SKU-100234".to_owned(),
                qty: 2,
                price_cents: 1299,
            },
            Item {
                sku: "SKU-200871".to_owned(),
                qty: 1,
                price_cents: 2401,
            },
        ],
        sent_ns,
    }
}

/// The JSON of a typical order (for `redis-benchmark`, S4's ceiling).
pub fn sample_json() -> String {
    serde_json::to_string(&order(123_456, 1_234_567_890_123)).expect("an order serializes")
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process epoch (monotonic; publisher and subscriber share a process).
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The benchmark scenarios (S1-S6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    /// Internal: the publishing child process of S5.
    S5Publish,
}

impl Scenario {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "S1" | "s1" => Scenario::S1,
            "S2" | "s2" => Scenario::S2,
            "S3" | "s3" => Scenario::S3,
            "S4" | "s4" => Scenario::S4,
            "S5" | "s5" => Scenario::S5,
            "S6" | "s6" => Scenario::S6,
            "S5-publish" => Scenario::S5Publish,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::S1 => "S1",
            Scenario::S2 => "S2",
            Scenario::S3 => "S3",
            Scenario::S4 => "S4",
            Scenario::S5 => "S5",
            Scenario::S6 => "S6",
            Scenario::S5Publish => "S5-publish",
        }
    }

    /// N when `--n` is not given.
    pub fn default_n(self) -> u64 {
        match self {
            Scenario::S1 | Scenario::S4 | Scenario::S6 => 200_000,
            Scenario::S2 => 20_000,
            Scenario::S3 => 100_000,
            Scenario::S5 | Scenario::S5Publish => 1_000_000,
        }
    }
}

/// `--scenario S1 --port 6379 --n 200000 [--seconds 5] [--namespace ns]`.
#[derive(Clone, Debug)]
pub struct Args {
    pub scenario: Scenario,
    pub port: u16,
    pub n: u64,
    /// S5: how long the slow consumer runs.
    pub seconds: f64,
    /// S5-publish: the namespace chosen by the parent.
    pub namespace: Option<String>,
    /// S3 of the reference: `XACK` each entry on its own (`--ack each`, per-entry code as
    /// usually written by hand) instead of one `XACK` per read batch (`--ack batch`, default).
    pub ack_each: bool,
}

pub const USAGE: &str =
    "usage: --scenario S1|S2|S3|S4|S5|S6 --port PORT [--n N] [--seconds S] [--ack batch|each]";

impl Args {
    pub fn from_env() -> Result<Args, String> {
        let mut scenario = None;
        let mut port = None;
        let mut n = None;
        let mut seconds = 5.0;
        let mut namespace = None;
        let mut ack_each = false;
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
            };
            match flag.as_str() {
                "--scenario" => {
                    let v = value()?;
                    scenario = Some(
                        Scenario::parse(&v)
                            .ok_or_else(|| format!("unknown scenario {v}; {USAGE}"))?,
                    );
                }
                "--port" => port = Some(value()?.parse().map_err(|e| format!("--port: {e}"))?),
                "--n" => n = Some(value()?.parse().map_err(|e| format!("--n: {e}"))?),
                "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
                "--namespace" => namespace = Some(value()?),
                "--ack" => {
                    ack_each = match value()?.as_str() {
                        "each" => true,
                        "batch" => false,
                        v => return Err(format!("--ack: {v} is neither batch nor each; {USAGE}")),
                    }
                }
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other}; {USAGE}")),
            }
        }
        let scenario = scenario.ok_or_else(|| format!("--scenario is required; {USAGE}"))?;
        let port = match (port, scenario) {
            (Some(p), _) => p,
            (None, Scenario::S6) => 0,
            (None, _) => return Err(format!("--port is required; {USAGE}")),
        };
        Ok(Args {
            scenario,
            port,
            n: n.unwrap_or_else(|| scenario.default_n()).max(1),
            seconds,
            namespace,
            ack_each,
        })
    }

    /// Only loopback: `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// A name no other run uses: `bench-<pid>-<scenario>-<ms>`.
pub fn unique_name(scenario: Scenario) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!(
        "bench-{}-{}-{ms}",
        std::process::id(),
        scenario.as_str().to_ascii_lowercase()
    )
}

/// Counts received (or handled, or acked) events and remembers when the target was reached.
#[derive(Debug)]
pub struct Progress {
    target: u64,
    count: AtomicU64,
    last_ns: AtomicU64,
    done_ns: AtomicU64,
}

impl Progress {
    pub fn new(target: u64) -> Self {
        Progress {
            target,
            count: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            done_ns: AtomicU64::new(0),
        }
    }

    /// Adds `k`; true once the target is reached.
    pub fn add(&self, k: u64) -> bool {
        let now = now_ns();
        let before = self.count.fetch_add(k, Ordering::Relaxed);
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        if before < self.target && before + k >= self.target {
            self.done_ns.store(now, Ordering::Relaxed);
        }
        before + k >= self.target
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn reached(&self) -> bool {
        self.count() >= self.target
    }

    /// When the target was reached, or else when the last event arrived (ns, [`now_ns`]).
    pub fn end_ns(&self) -> u64 {
        match self.done_ns.load(Ordering::Relaxed) {
            0 => self.last_ns.load(Ordering::Relaxed),
            t => t,
        }
    }

    /// Waits until the target is reached, nothing arrived for `idle`, or `hard` passed.
    /// Returns true when the target was reached.
    pub async fn wait(&self, idle: Duration, hard: Duration) -> bool {
        let start = now_ns();
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        let hard = u64::try_from(hard.as_nanos()).unwrap_or(u64::MAX);
        loop {
            if self.reached() {
                return true;
            }
            let now = now_ns();
            let last = self.last_ns.load(Ordering::Relaxed).max(start);
            if now.saturating_sub(last) > idle || now.saturating_sub(start) > hard {
                return self.reached();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Spreads `n` sends over time at `per_second`; `wait(i)` returns at the `i`-th send time.
/// Tokio timers have millisecond resolution, so sends go out in small bursts (5 per ms at
/// 5,000/s), the same for every contender.
#[derive(Debug)]
pub struct Pacer {
    start: tokio::time::Instant,
    interval_ns: u64,
}

impl Pacer {
    pub fn new(per_second: u64) -> Self {
        Pacer {
            start: tokio::time::Instant::now(),
            interval_ns: 1_000_000_000 / per_second.max(1),
        }
    }

    pub async fn wait(&self, i: u64) {
        let at = self.start + Duration::from_nanos(i * self.interval_ns);
        if at > tokio::time::Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// The S2 rate.
pub const S2_RATE: u64 = 5_000;
/// Events per pipeline / `publish_all` call where a single publisher sends (S1, S3, S5).
pub const PUB_BATCH: u64 = 128;
/// S3: entries per `XREADGROUP` (raw) and handler concurrency (eventbus, which reads as many
/// entries as it has room for).
pub const S3_BATCH: usize = 100;
/// S4: concurrent publishing tasks.
pub const S4_TASKS: u64 = 64;
/// A wait ends when nothing arrived for this long…
pub const IDLE: Duration = Duration::from_secs(3);
/// …or after this long in any case.
pub const HARD: Duration = Duration::from_secs(120);

/// Latency samples in ns.
#[derive(Debug, Default)]
pub struct Latencies(pub std::sync::Mutex<Vec<u64>>);

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies(std::sync::Mutex::new(Vec::with_capacity(n)))
    }

    pub fn record(&self, sent_ns: u64) {
        let lat = now_ns().saturating_sub(sent_ns);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(lat);
    }

    /// p50, p99, max in µs (one decimal).
    pub fn summary(&self) -> Option<(f64, f64, f64)> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| {
            let idx = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            us(v[idx])
        };
        Some((at(0.50), at(0.99), us(v[v.len() - 1])))
    }
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// `VmHWM` of `/proc/self/status`: this process's peak resident set, in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One line of the contender contract.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub contender: &'static str,
    pub scenario: &'static str,
    pub n: u64,
    pub received: u64,
    pub seconds: f64,
    pub msgs_per_s: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Report {
    /// A report of `received` events in `seconds`.
    pub fn new(
        contender: &'static str,
        scenario: Scenario,
        n: u64,
        received: u64,
        seconds: f64,
    ) -> Self {
        let msgs_per_s = if seconds > 0.0 {
            (received as f64 / seconds).round() as u64
        } else {
            0
        };
        Report {
            contender,
            scenario: scenario.as_str(),
            n,
            received,
            seconds: (seconds * 10_000.0).round() / 10_000.0,
            msgs_per_s,
            p50_us: None,
            p99_us: None,
            max_us: None,
            extra: BTreeMap::new(),
        }
    }

    /// Adds p50/p99/max.
    pub fn latencies(mut self, lat: &Latencies) -> Self {
        if let Some((p50, p99, max)) = lat.summary() {
            self.p50_us = Some(p50);
            self.p99_us = Some(p99);
            self.max_us = Some(max);
        }
        self
    }

    /// Adds a field beyond the contract (lost, pending, dropped, peak_rss_kib, ...).
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Prints the one JSON line.
    pub fn print(&self) {
        println!(
            "{}",
            serde_json::to_string(self).expect("a report serializes")
        );
    }
}

/// Prints `{"contender":..,"scenario":..,"error":".."}` and exits with status 1.
pub fn fail(contender: &str, scenario: &str, error: &dyn std::fmt::Display) -> ! {
    println!(
        "{}",
        serde_json::json!({"contender": contender, "scenario": scenario, "error": error.to_string()})
    );
    std::process::exit(1)
}

/// Seconds between two [`now_ns`] readings.
pub fn secs(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e9
}
