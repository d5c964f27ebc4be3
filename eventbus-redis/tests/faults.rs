//! Faults between the bus and Redis while events flow: the server killed with SIGKILL and
//! restarted from its append-only file, and the network black-holed or cut by a loopback proxy
//! ([`common::proxy`]).
//!
//! Every test checks that each durable event whose publish returned `Ok` was handled, that
//! failing publishes fail with a clear error within a bounded time, and how fast ephemeral
//! delivery comes back. Each prints one line of figures (`cargo test -p eventbus-redis --test
//! faults -- --nocapture` shows them):
//!
//! ```text
//! FIGURES redis_kill: published_ok=N failed_during_outage=N handled=N lost=0 duplicates=N recovery_ms=N
//! ```
//!
//! `handled` counts handler calls, `duplicates` the calls beyond the first for an id (allowed:
//! delivery is at least once), `recovery_ms` the time from the fault's end until an ephemeral
//! event published on the same bus is received again.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{PATIENCE, Recorder, RedisServer, namespace, plain, wait_until, wait_until_async};
use eventbus_core::prelude::*;
use eventbus_core::{Error, Receipt};
use eventbus_redis::{RedisOptions, RedisTransport};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// The durable event of every test: its id tells which publish it came from.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "faults.PaymentCaptured")]
struct PaymentCaptured {
    id: u64,
}

/// The ephemeral event: published continuously to see when live delivery is back.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "faults.Heartbeat")]
struct Heartbeat {
    seq: u64,
}

/// The consumer group of the durable handler.
const GROUP: &str = "ledger";
/// Durable publishes per publisher tick…
const PER_TICK: u64 = 10;
/// …one tick every 5 ms: about 2,000 events per second.
const TICK: Duration = Duration::from_millis(5);
/// A heartbeat every 10 ms.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(10);
/// Hard limits of the background publishers, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(25);
const MAX_EVENTS: u64 = 60_000;
/// A publish still running after this is a hang (the test fails on it).
const HANG: Duration = Duration::from_secs(15);
/// Ephemeral delivery must be back this soon after the fault ended.
const RECOVERY_LIMIT: Duration = Duration::from_secs(2);

/// Short timeouts for the proxy tests, so a stall is detected within a second.
fn fast_options() -> RedisOptions {
    RedisOptions::default()
        .response_timeout(Duration::from_millis(500))
        .connection_timeout(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(200))
        .block(Duration::from_millis(500))
        .health_check_interval(Duration::from_millis(250))
}

/// A bus on its own transport, with the default `claim_idle` (30 s): no test may depend on
/// another consumer claiming entries to see them handled.
async fn bus_on(url: &str, ns: &str, options: RedisOptions) -> Bus {
    let transport = RedisTransport::connect_with(url, options)
        .await
        .expect("connect to the test server");
    Bus::builder()
        .transport(transport)
        .namespace(ns)
        .build()
        .expect("valid bus")
}

/// Subscribes a group handler that records the id of every call.
async fn record_payments(bus: &Bus) -> Recorder<u64> {
    let handled = Recorder::default();
    let h = handled.clone();
    bus.subscribe_with(
        move |p: PaymentCaptured| {
            let h = h.clone();
            async move { h.push(p.id) }
        },
        HandlerOptions::new().group(GROUP).concurrency(64),
    )
    .await
    .expect("subscribe the durable handler");
    handled
}

/// Subscribes an ephemeral handler that records when each heartbeat arrived.
async fn record_heartbeats(bus: &Bus) -> Recorder<(u64, Instant)> {
    let received = Recorder::default();
    let r = received.clone();
    bus.subscribe(move |h: Heartbeat| {
        r.push((h.seq, Instant::now()));
        std::future::ready(())
    })
    .await
    .expect("subscribe the ephemeral handler");
    received
}

/// When the first heartbeat after `since` arrived.
fn first_heartbeat_after(received: &Recorder<(u64, Instant)>, since: Instant) -> Option<Instant> {
    received
        .items()
        .into_iter()
        .map(|(_, at)| at)
        .filter(|at| *at > since)
        .min()
}

/// Waits (at most `PATIENCE`) for a heartbeat after `since`; the delay since `since`.
async fn heartbeat_recovery(received: &Recorder<(u64, Instant)>, since: Instant) -> Duration {
    let back = wait_until(PATIENCE, || {
        first_heartbeat_after(received, since).is_some()
    })
    .await;
    assert!(
        back,
        "no ephemeral event was received within {PATIENCE:?} after the fault ended"
    );
    first_heartbeat_after(received, since)
        .expect("checked above")
        .duration_since(since)
}

/// One failed publish.
#[derive(Debug)]
struct PublishFailure {
    id: u64,
    at: Instant,
    took: Duration,
    error: String,
    /// A redis transport error naming the command and the stream, with its cause.
    meaningful: bool,
    /// Its cause is a timeout.
    timeout: bool,
    /// Its cause is a lost or unreachable connection (timeouts included).
    connection: bool,
}

/// What a publisher saw.
#[derive(Debug, Default)]
struct PublishLog {
    ok: Vec<u64>,
    failures: Vec<PublishFailure>,
    slowest: Duration,
}

impl PublishLog {
    /// Publishes one event, timing it and recording the outcome.
    async fn publish(&mut self, bus: &Bus, id: u64) -> bool {
        let started = Instant::now();
        let result = tokio::time::timeout(HANG, bus.publish(&PaymentCaptured { id })).await;
        let took = started.elapsed();
        self.slowest = self.slowest.max(took);
        let error = match result {
            Ok(Ok(_receipt)) => {
                self.ok.push(id);
                return true;
            }
            Ok(Err(e)) => e,
            Err(_elapsed) => Error::transport("test", format!("publish hung for {HANG:?}"), None),
        };
        self.failures.push(PublishFailure {
            id,
            at: started,
            took,
            meaningful: meaningful(&error),
            timeout: redis_cause(&error).is_some_and(redis::RedisError::is_timeout),
            connection: redis_cause(&error).is_some_and(redis::RedisError::is_io_error),
            error: error.to_string(),
        });
        false
    }

    fn assert_failures_are_clear(&self, bound: Duration) {
        for f in &self.failures {
            assert!(
                f.meaningful,
                "publish of {} failed with an unclear error: {}",
                f.id, f.error
            );
            assert!(
                f.took <= bound,
                "publish of {} took {:?} to fail (bound {bound:?}): {}",
                f.id,
                f.took,
                f.error
            );
        }
        assert!(
            self.slowest <= bound,
            "the slowest publish took {:?} (bound {bound:?})",
            self.slowest
        );
    }
}

/// A redis error that names the command and the stream, keeps its cause and says what became
/// of the event: not sent (`Error::Transport`), or outcome unknown with the event's id.
fn meaningful(e: &Error) -> bool {
    let text = e.to_string();
    let says_what_became_of_it = match e {
        Error::Transport {
            transport: "redis",
            source: Some(_),
            ..
        } => text.contains("not sent"),
        Error::PublishOutcomeUnknown {
            transport: "redis",
            source: Some(_),
            event_ids,
            ..
        } => event_ids.len() == 1,
        _ => false,
    };
    says_what_became_of_it
        && text.contains("XADD to stream")
        && text.contains("faults.PaymentCaptured")
}

/// The redis error under a transport error or an unknown outcome.
fn redis_cause(e: &Error) -> Option<&redis::RedisError> {
    match e {
        Error::Transport {
            source: Some(source),
            ..
        }
        | Error::PublishOutcomeUnknown {
            source: Some(source),
            ..
        } => source.downcast_ref::<redis::RedisError>(),
        _ => None,
    }
}

/// A background publisher of durable events at a steady rate.
struct Publisher {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    task: JoinHandle<PublishLog>,
}

impl Publisher {
    fn start(bus: Bus) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let task = tokio::spawn(async move {
            let mut log = PublishLog::default();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let started = Instant::now();
            let mut id = 0;
            while !s.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN && id < MAX_EVENTS {
                tick.tick().await;
                for _ in 0..PER_TICK {
                    if log.publish(&bus, id).await {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    id += 1;
                }
            }
            log
        });
        Publisher { stop, ok, task }
    }

    fn ok_count(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits (at most `PATIENCE`) until `n` more publishes succeeded than now.
    async fn wait_for_more(&self, n: u64, what: &str) {
        let target = self.ok_count() + n;
        assert!(
            wait_until(PATIENCE, || self.ok_count() >= target).await,
            "{what}: publishing did not get {n} more events through within {PATIENCE:?}"
        );
    }

    async fn stop(self) -> PublishLog {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the publisher task panicked")
    }
}

/// A background publisher of heartbeats; errors are ignored (only receipt times matter).
struct Heartbeats {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Heartbeats {
    fn start(bus: Bus) -> Heartbeats {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let started = Instant::now();
            let mut seq = 0;
            while !s.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
                tick.tick().await;
                let _ = tokio::time::timeout(HANG, bus.publish(&Heartbeat { seq })).await;
                seq += 1;
            }
        });
        Heartbeats { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the heartbeat task panicked");
    }
}

/// How the handled ids compare with the acknowledged publishes.
struct Tally {
    handled: usize,
    lost: Vec<u64>,
    duplicates: usize,
}

fn tally(ok: &[u64], handled: &Recorder<u64>) -> Tally {
    let calls = handled.items();
    let mut per_id: HashMap<u64, usize> = HashMap::with_capacity(calls.len());
    for id in &calls {
        *per_id.entry(*id).or_default() += 1;
    }
    let mut lost: Vec<u64> = ok
        .iter()
        .copied()
        .filter(|id| !per_id.contains_key(id))
        .collect();
    lost.sort_unstable();
    Tally {
        handled: calls.len(),
        lost,
        duplicates: per_id.values().map(|n| n - 1).sum(),
    }
}

/// Waits (at most `PATIENCE`) until every id in `ok` was handled, then tallies.
async fn wait_all_handled(ok: &[u64], handled: &Recorder<u64>) -> Tally {
    let expected: HashSet<u64> = ok.iter().copied().collect();
    wait_until(PATIENCE, || {
        let seen: HashSet<u64> = handled.items().into_iter().collect();
        expected.is_subset(&seen)
    })
    .await;
    let t = tally(ok, handled);
    assert!(
        t.lost.is_empty(),
        "{} events published with Ok were never handled (first: {:?})",
        t.lost.len(),
        &t.lost[..t.lost.len().min(20)]
    );
    t
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_flow_loses_no_acknowledged_event() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let ns = namespace("kill");
    // The default connection settings: what a service runs with.
    let bus = bus_on(&server.url(), &ns, RedisOptions::default()).await;
    let handled = record_payments(&bus).await;
    let heartbeats = record_heartbeats(&bus).await;
    let publisher = Publisher::start(bus.clone());
    let beats = Heartbeats::start(bus.clone());
    assert!(
        wait_until(PATIENCE, || handled.len() >= 1_000 && heartbeats.len() > 0).await,
        "events did not flow before the fault"
    );

    let killed_at = Instant::now();
    server.kill();
    // The outage: the publisher keeps trying meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The same port and directory: Redis replays its append-only file.
    server.resume();
    let up_at = Instant::now();

    let recovery = heartbeat_recovery(&heartbeats, up_at).await;
    publisher.wait_for_more(2_000, "after the restart").await;
    let log = publisher.stop().await;
    beats.stop().await;
    let t = wait_all_handled(&log.ok, &handled).await;

    // Failing publishes: only during the outage, each with a clear error, none hanging.
    let bound =
        RedisOptions::default().response_timeout + RedisOptions::default().connection_timeout;
    log.assert_failures_are_clear(bound);
    assert!(
        log.failures.iter().all(|f| f.at + f.took >= killed_at),
        "publishes failed before Redis was killed: {:?}",
        log.failures.first()
    );
    // The append-only file brought the stream and its group back: nothing was recreated.
    assert_eq!(bus.stats().groups_recreated, 0, "{:?}", bus.stats());
    println!(
        "FIGURES redis_kill: published_ok={} failed_during_outage={} handled={} lost={} duplicates={} recovery_ms={}",
        log.ok.len(),
        log.failures.len(),
        t.handled,
        t.lost.len(),
        t.duplicates,
        millis(recovery)
    );
    assert!(
        recovery < RECOVERY_LIMIT,
        "ephemeral delivery came back {recovery:?} after Redis accepted connections again"
    );
}

/// Publishes durable events one after another for `length` into a stalled network: none may
/// succeed, each must fail with a timeout error (or, when the connection was closed too, a
/// connection error). Returns how many failed.
async fn publish_into_black_hole(
    log: &mut PublishLog,
    publisher: &Bus,
    id: &mut u64,
    length: Duration,
    closed_too: bool,
) -> usize {
    let started = Instant::now();
    let before = log.failures.len();
    let mut attempts = 0;
    while started.elapsed() < length && attempts < 50 {
        let ok = log.publish(publisher, *id).await;
        assert!(!ok, "a publish succeeded through a black hole");
        *id += 1;
        attempts += 1;
    }
    let failures = &log.failures[before..];
    assert!(
        failures
            .iter()
            .all(|f| f.timeout || (closed_too && f.connection)),
        "a publish into the black hole failed with something else than a timeout: {:?}",
        failures.iter().find(|f| !f.timeout)
    );
    failures.len()
}

/// After the network came back at `since`: publishes heartbeats until one is received (the
/// delay is returned), then durable events until 100 more succeeded.
async fn delivery_comes_back(
    log: &mut PublishLog,
    publisher: &Bus,
    id: &mut u64,
    heartbeats: &Recorder<(u64, Instant)>,
    since: Instant,
) -> Duration {
    let mut seq = 0;
    let back = wait_until_async(PATIENCE, async || {
        let _ = publisher.publish(&Heartbeat { seq }).await;
        seq += 1;
        first_heartbeat_after(heartbeats, since).is_some()
    })
    .await;
    assert!(
        back,
        "no heartbeat within {PATIENCE:?} after the network came back"
    );
    let recovery = heartbeat_recovery(heartbeats, since).await;
    let ok_before = log.ok.len();
    let mut tries = 0;
    while log.ok.len() < ok_before + 100 && tries < 1_000 {
        log.publish(publisher, *id).await;
        *id += 1;
        tries += 1;
    }
    assert!(
        log.ok.len() >= ok_before + 100,
        "publishing did not come back after the network did: {:?}",
        log.failures.last()
    );
    recovery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_stall_is_detected_and_every_connection_comes_back() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let ns = namespace("stall");
    let options = fast_options();
    // Three transports, so each kind of connection shows its own reconnection.
    let consumer = bus_on(&proxy.url(), &ns, options.clone()).await;
    let listener = bus_on(&proxy.url(), &ns, options.clone()).await;
    let publisher = bus_on(&proxy.url(), &ns, options.clone()).await;
    let handled = record_payments(&consumer).await;
    let heartbeats = record_heartbeats(&listener).await;
    let mut log = PublishLog::default();
    let mut id = 0;
    let _ = delivery_comes_back(&mut log, &publisher, &mut id, &heartbeats, Instant::now()).await;
    wait_all_handled(&log.ok, &handled).await;
    // Longer than every timeout of the bus: the reply limit of a blocking read (block +
    // response_timeout), a health check plus its PING timeout, a connection attempt.
    let stall = Duration::from_secs(3);

    // 1. Every connection stays open but nothing gets through.
    proxy.stall();
    let mut failed = publish_into_black_hole(&mut log, &publisher, &mut id, stall, false).await;
    proxy.resume();
    let resumed_at = Instant::now();
    let recovery =
        delivery_comes_back(&mut log, &publisher, &mut id, &heartbeats, resumed_at).await;
    wait_all_handled(&log.ok, &handled).await;
    let durable_recovery = resumed_at.elapsed();
    // Both long-lived connections were found dead and replaced.
    let consumer_reconnects = consumer.stats().reconnects;
    let pubsub_reconnects = listener.stats().reconnects;
    assert!(
        consumer_reconnects >= 1,
        "the durable consumer never replaced its stalled connection: {:?}",
        consumer.stats()
    );
    assert!(
        pubsub_reconnects >= 1,
        "the pub/sub connection was never found dead: {:?}",
        listener.stats()
    );

    // 2. The server vanishes: connections are closed and new ones go into the black hole, so
    // every reconnection attempt runs into its connection timeout.
    proxy.stall();
    proxy.cut();
    failed += publish_into_black_hole(&mut log, &publisher, &mut id, stall, true).await;
    proxy.resume();
    let resumed_at = Instant::now();
    let recovery_2 =
        delivery_comes_back(&mut log, &publisher, &mut id, &heartbeats, resumed_at).await;
    let t = wait_all_handled(&log.ok, &handled).await;

    // Every failure was a timeout within a bound: a command waits at most the connection
    // timeout for a connection and the response timeout for its answer (plus scheduling slack).
    let bound = options.connection_timeout + options.response_timeout + Duration::from_millis(500);
    log.assert_failures_are_clear(bound);
    println!(
        "FIGURES network_stall: published_ok={} failed_during_outage={} handled={} lost={} duplicates={} recovery_ms={} recovery_after_vanish_ms={} durable_recovery_ms={} slowest_publish_ms={} consumer_reconnects={} pubsub_reconnects={}",
        log.ok.len(),
        failed,
        t.handled,
        t.lost.len(),
        t.duplicates,
        millis(recovery),
        millis(recovery_2),
        millis(durable_recovery),
        millis(log.slowest),
        consumer_reconnects,
        pubsub_reconnects
    );
    for (what, r) in [("stall", recovery), ("vanished server", recovery_2)] {
        assert!(
            r < RECOVERY_LIMIT,
            "ephemeral delivery came back {r:?} after the {what} ended"
        );
    }
}

/// The entry id of a receipt.
fn stream_id(receipt: &Receipt) -> String {
    receipt
        .stream_id
        .clone()
        .expect("a durable publish has a stream id")
}

/// True when every entry in `ids` is in the pending list of the group.
async fn all_pending(url: &str, stream: &str, ids: &[String]) -> bool {
    let mut conn = plain(url).await;
    for id in ids {
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
        if !matches!(&reply, redis::Value::Array(entries) if !entries.is_empty()) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_lose_no_acknowledged_event() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let ns = namespace("cut");
    let bus = bus_on(&proxy.url(), &ns, fast_options()).await;
    let handled = record_payments(&bus).await;
    let heartbeats = record_heartbeats(&bus).await;
    let publisher = Publisher::start(bus.clone());
    let beats = Heartbeats::start(bus.clone());
    assert!(
        wait_until(PATIENCE, || handled.len() >= 1_000 && heartbeats.len() > 0).await,
        "events did not flow before the fault"
    );

    // 1. Every connection cut mid-flow.
    let accepted_before = proxy.accepted();
    let cut_at = Instant::now();
    proxy.cut();
    let recovery = heartbeat_recovery(&heartbeats, cut_at).await;
    publisher.wait_for_more(2_000, "after the cut").await;
    let mut log = publisher.stop().await;
    beats.stop().await;
    let cut_failures = log.failures.len();
    log.assert_failures_are_clear(fast_options().response_timeout + Duration::from_millis(500));
    assert!(
        log.failures.iter().all(|f| f.at + f.took >= cut_at),
        "publishes failed before the cut: {:?}",
        log.failures.first()
    );
    assert!(proxy.accepted() > accepted_before, "nothing reconnected");
    wait_all_handled(&log.ok, &handled).await;

    // 2. A cut while Redis's answer to the consumer's blocking read is on its way: the entries
    // are in the consumer's pending list, but it never got them. Published directly, around
    // the proxy.
    let direct = bus_on(&server.url(), &ns, RedisOptions::default()).await;
    let stream = direct.channel_of::<PaymentCaptured>();
    let mut in_reply = false;
    for attempt in 0..3 {
        proxy.stall();
        let id = 1_000_000 + attempt;
        let receipt = direct
            .publish(&PaymentCaptured { id })
            .await
            .expect("direct publish");
        log.ok.push(id);
        let entry = [stream_id(&receipt)];
        // The consumer was blocked in XREADGROUP: Redis hands it the entry at once, into the
        // stalled connection. (If its read had just ended, Redis never sees the next one: the
        // entry waits in the stream. Try again.)
        in_reply = wait_until_async(Duration::from_secs(1), async || {
            all_pending(&server.url(), &stream, &entry).await
        })
        .await;
        if in_reply {
            break;
        }
        proxy.resume();
        wait_all_handled(&log.ok, &handled).await;
    }
    assert!(in_reply, "the consumer never had a reply in flight");
    let cut_in_flight_at = Instant::now();
    proxy.cut();
    proxy.resume();
    let t = wait_all_handled(&log.ok, &handled).await;
    let in_flight_recovery = cut_in_flight_at.elapsed();

    println!(
        "FIGURES network_cut: published_ok={} failed_during_outage={} handled={} lost={} duplicates={} recovery_ms={} in_flight_recovery_ms={} reconnects={}",
        log.ok.len(),
        cut_failures,
        t.handled,
        t.lost.len(),
        t.duplicates,
        millis(recovery),
        millis(in_flight_recovery),
        bus.stats().reconnects
    );
    assert!(
        recovery < RECOVERY_LIMIT,
        "ephemeral delivery came back {recovery:?} after the cut"
    );
}
