//! The shared command connection (publishes, acks) comes back from a network black hole.
//!
//! A loopback proxy ([`common::proxy`]) black-holes every connection for a few seconds while
//! publishers keep going, then lets traffic through again, in two ways:
//!
//! * healed: every connection forwards again, with what was held meanwhile;
//! * new connections only: the old connections stay dead, as after a NAT gateway or firewall lost
//!   its connection table. Only a transport that notices and opens new connections recovers.
//!
//! Each test checks that publishes succeed again within the bound of the README
//! (`connection_timeout + response_timeout`, plus scheduling slack, once the path is back), that
//! every failure during the outage came within the command deadline and said what became of
//! the event, and that each event whose publish returned `Ok` was handled and acknowledged
//! (nothing left pending). A failure is either "not sent" (`Error::Transport`: the event is
//! never handled) or "outcome unknown" (`Error::PublishOutcomeUnknown`: it may have been
//! written). Every event of unknown outcome is then published again under its id, and the
//! `dedup` handler handles each exactly once. Each test prints:
//!
//! ```text
//! FIGURES blackhole_<mode>: published_ok=N not_sent=N outcome_unknown=N unknown_written=N slowest_failure_ms=N recovery_ms=N settle_ms=N handled=N lost=0 duplicates=N duplicates_skipped=N producer_reconnects=N consumer_reconnects=N
//! ```
//!
//! `recovery_ms` runs from the end of the black hole to the first publish that succeeded after
//! it, `settle_ms` to the moment every acknowledged event was handled and acked;
//! `unknown_written` counts the events of unknown outcome that had in fact been written.
//!
//! The last tests check that a producer counts a connection closed under it, which the
//! connection manager re-establishes by itself, and that a publish while Redis is down fails
//! as not sent.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{PATIENCE, Recorder, RedisServer, namespace, plain, wait_until, wait_until_async};
use eventbus_core::Error;
use eventbus_core::PublishOptions;
use eventbus_core::prelude::*;
use eventbus_redis::{RedisOptions, RedisTransport};
use tokio::time::MissedTickBehavior;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "blackhole.OrderShipped")]
struct OrderShipped {
    id: u64,
}

const GROUP: &str = "shipping";
/// Publishers running at once, so that commands are in flight while the connection is replaced.
const PUBLISHERS: u64 = 4;
/// One publish per tick and publisher: about 2,000 events per second in all.
const TICK: Duration = Duration::from_millis(2);
/// Hard limits of each publisher, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(30);
const MAX_EVENTS: u64 = 25_000;
/// A publish still running after this is a hang.
const HANG: Duration = Duration::from_secs(15);
/// How long the network stays black-holed: longer than every timeout of the bus.
const OUTAGE: Duration = Duration::from_secs(3);
/// Scheduling slack on top of every bound (two cores shared by several builds).
const SLACK: Duration = Duration::from_millis(500);

fn options() -> RedisOptions {
    RedisOptions::default()
        .response_timeout(Duration::from_millis(500))
        .connection_timeout(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(200))
        .block(Duration::from_millis(500))
        .health_check_interval(Duration::from_millis(250))
}

async fn bus_on(url: &str, ns: &str) -> Bus {
    let transport = RedisTransport::connect_with(url, options())
        .await
        .expect("connect to the test server");
    Bus::builder()
        .transport(transport)
        .namespace(ns)
        .build()
        .expect("valid bus")
}

/// How a failed publish ended, as its error says.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// `Error::Transport` saying it was not sent: the event was never written.
    NotSent,
    /// `Error::PublishOutcomeUnknown`, with the event id to publish it again under.
    Unknown { event_id: String },
    /// Anything else: a failure of the test.
    Other,
}

/// One publish and how it ended.
#[derive(Debug, Clone)]
struct Outcome {
    id: u64,
    started: Instant,
    ended: Instant,
    /// `None` when it succeeded.
    error: Option<String>,
    /// What the error says became of the event.
    failure: Option<Failure>,
}

impl Outcome {
    /// A failure that says what became of the event, within the command deadline.
    fn failed_as_promised(&self) -> bool {
        matches!(
            self.failure,
            Some(Failure::NotSent | Failure::Unknown { .. })
        )
    }
}

/// Publishers of durable events sharing one bus, each sending one event after another.
struct Publishers {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publishers {
    fn start(bus: &Bus) -> Publishers {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let tasks = (0..PUBLISHERS)
            .map(|n| {
                let (bus, outcomes, stop) = (bus.clone(), outcomes.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(TICK);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    let began = Instant::now();
                    let mut sent = 0;
                    while !stop.is_cancelled() && began.elapsed() < MAX_RUN && sent < MAX_EVENTS {
                        tick.tick().await;
                        let id = n + sent * PUBLISHERS;
                        sent += 1;
                        let outcome = publish(&bus, id).await;
                        outcomes.lock().unwrap().push(outcome);
                    }
                })
            })
            .collect();
        Publishers {
            outcomes,
            stop,
            tasks,
        }
    }

    fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    fn ok_count(&self) -> usize {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes.iter().filter(|o| o.error.is_none()).count()
    }

    /// The first publish that succeeded after `since`, if any.
    fn first_ok_after(&self, since: Instant) -> Option<Instant> {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes
            .iter()
            .filter(|o| o.error.is_none() && o.ended > since)
            .map(|o| o.ended)
            .min()
    }

    /// Waits (at most `PATIENCE`) until `n` more publishes succeeded than now.
    async fn wait_for_more(&self, n: usize, what: &str) {
        let target = self.ok_count() + n;
        assert!(
            wait_until(PATIENCE, || self.ok_count() >= target).await,
            "{what}: publishing did not get {n} more events through within {PATIENCE:?}: last \
             failure {:?}",
            self.outcomes().iter().rev().find(|o| o.error.is_some())
        );
    }

    async fn stop(self) -> Vec<Outcome> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("a publisher panicked");
        }
        let outcomes = self.outcomes.lock().unwrap();
        outcomes.clone()
    }
}

async fn publish(bus: &Bus, id: u64) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(HANG, bus.publish(&OrderShipped { id })).await;
    let ended = Instant::now();
    let (error, failure) = match result {
        Ok(Ok(_receipt)) => (None, None),
        Ok(Err(e)) => {
            let failure = match &e {
                Error::Transport { message, .. } if message.contains("not sent") => {
                    Failure::NotSent
                }
                Error::PublishOutcomeUnknown { event_ids, .. } if event_ids.len() == 1 => {
                    Failure::Unknown {
                        event_id: event_ids[0].clone(),
                    }
                }
                _ => Failure::Other,
            };
            (Some(e.to_string()), Some(failure))
        }
        Err(_elapsed) => (
            Some(format!("publish hung for {HANG:?}")),
            Some(Failure::Other),
        ),
    };
    Outcome {
        id,
        started,
        ended,
        error,
        failure,
    }
}

/// Entries of the group delivered and not acknowledged yet (`XPENDING` summary), read around
/// the proxy.
async fn pending(url: &str, stream: &str) -> u64 {
    let mut conn = plain(url).await;
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    match reply {
        redis::Value::Array(fields) => match fields.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// How the network comes back.
#[derive(Clone, Copy, Debug)]
enum Heal {
    /// Every connection forwards again.
    Everything,
    /// Only connections opened from now on forward; the old ones stay black-holed.
    NewConnectionsOnly,
}

async fn survive_black_hole(heal: Heal, name: &str) {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let ns = namespace(name);
    // Separate transports: the producer only publishes, the consumer only reads and acks.
    let producer = bus_on(&proxy.url(), &ns).await;
    let consumer = bus_on(&proxy.url(), &ns).await;
    let handled: Recorder<u64> = Recorder::default();
    let h = handled.clone();
    consumer
        .subscribe_with(
            move |o: OrderShipped| {
                let h = h.clone();
                async move { h.push(o.id) }
            },
            HandlerOptions::new()
                .group(GROUP)
                .concurrency(64)
                .dedup(Duration::from_secs(600)),
        )
        .await
        .expect("subscribe the durable handler");
    let stream = producer.channel_of::<OrderShipped>();

    let publishers = Publishers::start(&producer);
    publishers.wait_for_more(500, "before the black hole").await;

    proxy.stall();
    let outage_began = Instant::now();
    // The fault lasts this long; publishers keep going meanwhile.
    tokio::time::sleep(OUTAGE).await;
    match heal {
        Heal::Everything => proxy.resume(),
        Heal::NewConnectionsOnly => proxy.resume_new_only(),
    }
    let healed_at = Instant::now();
    let opts = options();
    // The repair attempt in flight when the path came back ends at its connection timeout; a
    // publish on the old connection at its response timeout.
    let bound = opts.connection_timeout + opts.response_timeout + SLACK;
    assert!(
        wait_until(bound + PATIENCE, || publishers
            .first_ok_after(healed_at)
            .is_some())
        .await,
        "{heal:?}: no publish succeeded within {:?} after the network came back",
        bound + PATIENCE
    );
    let recovery = publishers
        .first_ok_after(healed_at)
        .expect("checked above")
        .duration_since(healed_at);
    publishers
        .wait_for_more(1_000, "after the black hole")
        .await;
    let outcomes = publishers.stop().await;

    // Every failure said what became of its event, within the command deadline, and happened
    // around the outage.
    let deadline = opts.connection_timeout + opts.response_timeout + SLACK;
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    assert!(!failures.is_empty(), "no publish failed in the black hole");
    for f in &failures {
        assert!(
            f.failed_as_promised(),
            "a publish failed neither as not sent nor as outcome unknown: {f:?}"
        );
        assert!(
            f.ended - f.started <= deadline,
            "a publish took {:?} to fail (bound {deadline:?}): {f:?}",
            f.ended - f.started
        );
        assert!(
            f.ended >= outage_began,
            "a publish failed before the black hole: {f:?}"
        );
    }
    let slowest_failure = failures
        .iter()
        .map(|f| f.ended - f.started)
        .max()
        .unwrap_or_default();

    // Every acknowledged publish was handled, and acks flow again: nothing stays pending.
    let ok: HashSet<u64> = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .map(|o| o.id)
        .collect();
    let all_handled = wait_until(PATIENCE, || {
        let seen: HashSet<u64> = handled.items().into_iter().collect();
        ok.is_subset(&seen)
    })
    .await;
    let acked = wait_until_async(PATIENCE, async || {
        pending(&server.url(), &stream).await == 0
    })
    .await;
    let settle = healed_at.elapsed();

    // The events of unknown outcome: some were written (their bytes reached Redis after all),
    // some not. Publishing each again under its id makes every one handled, exactly once.
    let unknown: Vec<(u64, String)> = failures
        .iter()
        .filter_map(|f| match &f.failure {
            Some(Failure::Unknown { event_id }) => Some((f.id, event_id.clone())),
            _ => None,
        })
        .collect();
    let handled_before_retry: HashSet<u64> = handled.items().into_iter().collect();
    let unknown_written = unknown
        .iter()
        .filter(|(id, _)| handled_before_retry.contains(id))
        .count();
    for (id, event_id) in &unknown {
        producer
            .publish_with(
                &OrderShipped { id: *id },
                PublishOptions::default().event_id(event_id.clone()),
            )
            .await
            .expect("publish again under the same id");
    }
    let retried: HashSet<u64> = unknown.iter().map(|(id, _)| *id).collect();
    // Settled: the consumer group has nothing unread and nothing pending, so every copy
    // published again was read and handled or skipped.
    let settled = eventbus_core::testing::try_settle(&consumer, PATIENCE).await;
    let seen: HashSet<u64> = handled.items().into_iter().collect();
    let all_retried_handled = settled.is_ok() && retried.is_subset(&seen);
    assert!(
        all_retried_handled,
        "events published again under their id were not all handled within {PATIENCE:?}: \
         missing {:?}, {settled:?}, acked before the retries: {acked}, stats {:?}",
        retried.difference(&seen).collect::<Vec<_>>(),
        consumer.stats()
    );
    let not_sent: HashSet<u64> = failures
        .iter()
        .filter(|f| f.failure == Some(Failure::NotSent))
        .map(|f| f.id)
        .collect();
    let calls = handled.items();
    let sent_anyway: Vec<&u64> = calls.iter().filter(|id| not_sent.contains(id)).collect();
    assert!(
        sent_anyway.is_empty(),
        "publishes that failed as not sent were handled: {sent_anyway:?}"
    );
    let mut per_id: HashMap<u64, usize> = HashMap::with_capacity(calls.len());
    for id in &calls {
        *per_id.entry(*id).or_default() += 1;
    }
    let lost = ok.iter().filter(|id| !per_id.contains_key(id)).count();
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    let duplicates_skipped = consumer.stats().duplicates_skipped;
    let producer_reconnects = producer.stats().reconnects;
    let consumer_reconnects = consumer.stats().reconnects;
    println!(
        "FIGURES blackhole_{name}: published_ok={} not_sent={} outcome_unknown={} unknown_written={unknown_written} slowest_failure_ms={} recovery_ms={} settle_ms={} handled={} lost={lost} duplicates={duplicates} duplicates_skipped={duplicates_skipped} producer_reconnects={producer_reconnects} consumer_reconnects={consumer_reconnects}",
        ok.len(),
        not_sent.len(),
        unknown.len(),
        slowest_failure.as_millis(),
        recovery.as_millis(),
        settle.as_millis(),
        calls.len(),
    );
    assert!(
        all_handled && lost == 0,
        "{lost} events published with Ok were never handled"
    );
    // An event published again under its id is handled once. (Other events may be handled
    // twice: a handler call whose dedup mark or ack was lost in the black hole runs again when
    // the entry is delivered again, as the README says.)
    let retried_twice: Vec<(&u64, &usize)> = per_id
        .iter()
        .filter(|(id, n)| retried.contains(id) && **n > 1)
        .collect();
    assert!(
        retried_twice.is_empty(),
        "events published again under their id were handled twice: {retried_twice:?}"
    );
    assert!(
        duplicates_skipped >= unknown_written as u64,
        "{unknown_written} events of unknown outcome were written, and published again under \
         their ids, but the dedup handler skipped only {duplicates_skipped}"
    );
    assert!(
        acked,
        "{heal:?}: entries still pending {PATIENCE:?} after the network came back: acks do not \
         get through"
    );
    assert!(
        recovery <= bound,
        "{heal:?}: publishes came back {recovery:?} after the network (bound {bound:?})"
    );
    if let Heal::NewConnectionsOnly = heal {
        assert!(
            producer_reconnects >= 1,
            "the producer never replaced its dead connection: {:?}",
            producer.stats()
        );
        assert!(
            consumer_reconnects >= 1,
            "the consumer never replaced its dead connections: {:?}",
            consumer.stats()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_acks_come_back_when_the_network_heals() {
    survive_black_hole(Heal::Everything, "healed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shared_connection_is_replaced_when_only_new_connections_get_through() {
    survive_black_hole(Heal::NewConnectionsOnly, "new_only").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_logs_and_counts_the_loss_of_its_connection() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let producer = bus_on(&proxy.url(), &namespace("producer_loss")).await;
    producer
        .publish(&OrderShipped { id: 0 })
        .await
        .expect("publish before the cut");
    proxy.cut();
    // The manager reconnects by itself after a closed socket; the loss is counted all the same.
    let mut id = 1;
    let counted = wait_until_async(PATIENCE, async || {
        let published = producer.publish(&OrderShipped { id }).await.is_ok();
        id += 1;
        published && producer.stats().reconnects >= 1
    })
    .await;
    assert!(
        counted,
        "the producer did not count its lost connection: {:?}",
        producer.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_producer_finds_its_dead_connection_at_the_first_timeout() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let producer = bus_on(&proxy.url(), &namespace("idle_producer")).await;
    producer
        .publish(&OrderShipped { id: 0 })
        .await
        .expect("publish before the black hole");
    // Nothing is sent while the old connection dies: the first publish after it finds out.
    proxy.stall();
    proxy.resume_new_only();
    let began = Instant::now();
    let mut outcomes = Vec::new();
    let mut id = 1;
    while began.elapsed() < PATIENCE && outcomes.len() < 100 {
        let outcome = publish(&producer, id).await;
        id += 1;
        let ok = outcome.error.is_none();
        outcomes.push(outcome);
        if ok {
            break;
        }
    }
    let back = began.elapsed();
    let opts = options();
    // The publish that timed out, the PING that decides, a new connection.
    let bound = 2 * opts.response_timeout + opts.connection_timeout + SLACK;
    println!(
        "FIGURES blackhole_idle_producer: back_ms={} failed_first={} producer_reconnects={}",
        back.as_millis(),
        outcomes.len() - 1,
        producer.stats().reconnects
    );
    assert!(
        outcomes.last().is_some_and(|o| o.error.is_none()),
        "publishing never came back: {:?}",
        outcomes.last()
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.error.is_none() || o.failed_as_promised()),
        "a publish failed neither as not sent nor as outcome unknown: {outcomes:?}"
    );
    assert!(
        back <= bound,
        "publishing came back after {back:?} (bound {bound:?})"
    );
    assert!(producer.stats().reconnects >= 1, "{:?}", producer.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_while_redis_is_down_fails_as_not_sent() {
    let mut server = RedisServer::start();
    let producer = bus_on(&server.url(), &namespace("redis_down")).await;
    producer
        .publish(&OrderShipped { id: 0 })
        .await
        .expect("publish before the kill");
    server.kill();
    // The closed socket is seen (and counted) at once; from then on publishes wait for the
    // connection, and fail as not sent when it does not come back in time.
    assert!(
        wait_until(PATIENCE, || producer.stats().reconnects >= 1).await,
        "the producer did not see its connection close: {:?}",
        producer.stats()
    );
    let outcome = publish(&producer, 1).await;
    let opts = options();
    let deadline = opts.connection_timeout + opts.response_timeout + SLACK;
    assert_eq!(
        outcome.failure,
        Some(Failure::NotSent),
        "a publish while Redis is down: {outcome:?}"
    );
    assert!(outcome.ended - outcome.started <= deadline, "{outcome:?}");
    server.resume();
    let mut id = 2;
    let back = wait_until_async(PATIENCE, async || {
        id += 1;
        publish(&producer, id).await.error.is_none()
    })
    .await;
    assert!(back, "publishing did not come back after Redis did");
}
