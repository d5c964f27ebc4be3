//! Graceful shutdown of a durable consumer under load: every handler call that started finishes
//! and is acked, nothing is acked that was not handled, and a second consumer of the group gets
//! exactly what the first one did not handle. A stop leaves nothing pending (the entries of a
//! read in flight are handled too), so the next instance goes on at once and in order; settle
//! waits for the backlog of the bus's groups.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, builder, bus, namespace, plain, wait_until};
use eventbus_core::prelude::*;
use eventbus_redis::RedisTransport;
use redis::Value;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "jobs.Work")]
struct Work {
    n: u64,
}

const GROUP: &str = "workers";
/// How long a handler call takes.
const WORK: Duration = Duration::from_millis(3);
/// At most this many events are published (the publisher normally stops long before).
const MAX_EVENTS: u64 = 20_000;

/// What the handlers of one bus did.
#[derive(Clone, Default)]
struct Calls {
    started: Recorder<u64>,
    handled: Recorder<u64>,
    in_flight: Arc<AtomicUsize>,
}

impl Calls {
    async fn subscribe(&self, bus: &Bus, concurrency: usize) {
        let calls = self.clone();
        bus.subscribe_with(
            move |w: Work| {
                let calls = calls.clone();
                async move {
                    calls.in_flight.fetch_add(1, Ordering::SeqCst);
                    calls.started.push(w.n);
                    tokio::time::sleep(WORK).await;
                    calls.handled.push(w.n);
                    calls.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            },
            HandlerOptions::new().group(GROUP).concurrency(concurrency),
        )
        .await
        .expect("the consumer starts");
    }
}

fn set(items: &[u64]) -> BTreeSet<u64> {
    items.iter().copied().collect()
}

/// Entry ids pending in the group (`XPENDING key group - + count`).
async fn pending_ids(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<String> {
    let value: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .arg("-")
        .arg("+")
        .arg(MAX_EVENTS)
        .query_async(conn)
        .await
        .expect("XPENDING");
    let Value::Array(rows) = value else {
        panic!("XPENDING reply {value:?}")
    };
    rows.into_iter()
        .map(|row| match row {
            Value::Array(fields) => match fields.into_iter().next() {
                Some(Value::BulkString(id)) => String::from_utf8(id).expect("ASCII id"),
                other => panic!("XPENDING row starts with {other:?}"),
            },
            other => panic!("XPENDING row {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_under_load_finishes_and_acks_what_started_and_nothing_else() {
    let server = RedisServer::start();
    let ns = namespace("shutdown-load");
    let first = builder(&server.url(), &ns)
        .await
        .instance("first")
        .build()
        .unwrap();
    let a = Calls::default();
    a.subscribe(&first, 4).await;
    let stream = first.channel_of::<Work>();

    // A publisher of its own (another service), publishing continuously until told to stop.
    let publisher = bus(&server.url(), &ns).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ids: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let published = Arc::new(AtomicUsize::new(0));
    let producing = {
        let (stop, ids, published) = (stop.clone(), ids.clone(), published.clone());
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(1));
            for n in 0..MAX_EVENTS {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                pace.tick().await;
                let receipt = publisher.publish(&Work { n }).await.expect("publish");
                let id = receipt.stream_id.expect("a stream entry id");
                ids.lock().unwrap().insert(id, n);
                published.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // Mid-flow: enough handled, and calls in flight right now.
    assert!(
        wait_until(PATIENCE, || a.handled.len() >= 200
            && a.in_flight.load(Ordering::SeqCst) > 0)
        .await,
        "the first consumer did not get going: {} handled",
        a.handled.len()
    );
    let handled_before_shutdown = a.handled.len();
    let in_flight_at_shutdown = a.in_flight.load(Ordering::SeqCst);
    tokio::time::timeout(PATIENCE, first.shutdown())
        .await
        .expect("shutdown finishes in time");

    // Every call that started finished before shutdown returned.
    let started_a = set(&a.started.items());
    let handled_a = set(&a.handled.items());
    assert_eq!(a.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(started_a, handled_a, "a started call did not finish");
    assert_eq!(
        a.started.len(),
        started_a.len(),
        "an event was handled twice by the first consumer"
    );

    // Publishing went on during the shutdown; a few more after it, then stop.
    let after = published.load(Ordering::SeqCst) + 50;
    assert!(wait_until(PATIENCE, || published.load(Ordering::SeqCst) >= after).await);
    stop.store(true, Ordering::SeqCst);
    producing.await.expect("the publisher did not panic");
    let ids = ids.lock().unwrap().clone();
    let all: BTreeSet<u64> = ids.values().copied().collect();
    assert_eq!(all.len(), ids.len());

    // What is still pending was never started: everything handled was acked, and only that.
    let mut conn = plain(&server.url()).await;
    let pending = pending_ids(&mut conn, &stream).await;
    for id in &pending {
        let n = ids[id];
        assert!(
            !started_a.contains(&n),
            "entry {id} (event {n}) was handled but is still pending"
        );
    }

    // A second consumer of the group gets exactly what the first did not handle: the entries
    // published later (the first handled everything it read, also what a read in flight at the
    // stop handed over).
    let second = builder(&server.url(), &ns)
        .await
        .instance("second")
        .build()
        .unwrap();
    let b = Calls::default();
    b.subscribe(&second, 16).await;
    let expected: BTreeSet<u64> = all.difference(&handled_a).copied().collect();
    assert!(
        wait_until(PATIENCE, || set(&b.handled.items()) == expected).await,
        "the second consumer handled {} of {} expected events",
        b.handled.len(),
        expected.len()
    );
    assert!(
        common::wait_until_async(PATIENCE, async || pending_ids(&mut conn, &stream)
            .await
            .is_empty())
        .await,
        "entries stay pending after the second consumer handled everything"
    );
    second.shutdown().await;

    let handled_b = b.handled.items();
    let duplicates =
        handled_b.len() - set(&handled_b).len() + set(&handled_b).intersection(&handled_a).count();
    let union: BTreeSet<u64> = handled_a.union(&set(&handled_b)).copied().collect();
    let lost = all.difference(&union).count();
    assert_eq!(duplicates, 0, "events handled twice");
    assert_eq!(lost, 0, "events lost");
    assert_eq!(
        a.started.len(),
        started_a.len(),
        "the first bus ran on after shutdown"
    );
    println!(
        "FIGURES shutdown_under_load: published={} handled_before_shutdown={handled_before_shutdown} \
         in_flight_at_shutdown={in_flight_at_shutdown} pending_after={} handled_after_restart={} \
         lost={lost}",
        all.len(),
        pending.len(),
        handled_b.len()
    );
}

/// Entries pending in the group, and on which consumers (`XPENDING key group` summary).
async fn pending_summary(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> (u64, Vec<(String, u64)>) {
    let value: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(GROUP)
        .query_async(conn)
        .await
        .expect("XPENDING");
    let Value::Array(fields) = value else {
        panic!("XPENDING reply {value:?}")
    };
    let count = match &fields[0] {
        Value::Int(n) => u64::try_from(*n).expect("a count"),
        other => panic!("XPENDING count {other:?}"),
    };
    let owners = match &fields[3] {
        Value::Array(rows) => rows
            .iter()
            .map(|row| {
                let cells: Vec<String> = match row {
                    Value::Array(cells) => cells
                        .iter()
                        .map(|c| match c {
                            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            other => panic!("XPENDING cell {other:?}"),
                        })
                        .collect(),
                    other => panic!("XPENDING row {other:?}"),
                };
                (cells[0].clone(), cells[1].parse().expect("a count"))
            })
            .collect(),
        Value::Nil => Vec::new(),
        other => panic!("XPENDING consumers {other:?}"),
    };
    (count, owners)
}

/// A bus whose claims are far away: only what a stopping consumer leaves behind can delay the
/// next instance.
async fn patient_instance(url: &str, ns: &str, instance: Option<&str>) -> Bus {
    let builder = builder(url, ns)
        .await
        .configure(|c| c.claim_idle = Duration::from_secs(60));
    match instance {
        Some(name) => builder.instance(name),
        None => builder,
    }
    .build()
    .unwrap()
}

/// Subscribes a handler of [`Work`] that records each `n`. It is quick: the consumer spends
/// most of its time reading, so a stop mostly comes while a read is in flight.
async fn record_work(bus: &Bus, concurrency: usize, handled: &Recorder<u64>) {
    let handled = handled.clone();
    bus.subscribe_with(
        move |w: Work| {
            let handled = handled.clone();
            async move { handled.push(w.n) }
        },
        HandlerOptions::new().group(GROUP).concurrency(concurrency),
    )
    .await
    .expect("the consumer starts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_consumer_leaves_nothing_pending_and_the_next_instance_goes_on_at_once() {
    const EVENTS: u64 = 1_000;
    const ROUNDS: usize = 8;
    let server = RedisServer::start();
    let ns = namespace("stop-backlog");
    let publisher = bus(&server.url(), &ns).await;
    let events: Vec<Work> = (0..EVENTS).map(|n| Work { n }).collect();
    publisher.publish_all(&events).await.unwrap();
    let stream = publisher.channel_of::<Work>();
    let mut conn = plain(&server.url()).await;

    // Instances of one service, stopped one after the other in the middle of the backlog.
    let handled = Recorder::default();
    let mut stops = Vec::new();
    for round in 1..=ROUNDS {
        let instance = patient_instance(&server.url(), &ns, Some("worker")).await;
        record_work(&instance, 4, &handled).await;
        let target = round * 100;
        assert!(
            wait_until(PATIENCE, || handled.len() >= target).await,
            "round {round}: {} handled",
            handled.len()
        );
        let began = std::time::Instant::now();
        instance.shutdown().await;
        stops.push(began.elapsed());
        let (pending, owners) = pending_summary(&mut conn, &stream).await;
        assert_eq!(
            (pending, owners),
            (0, vec![]),
            "round {round}: entries left pending by a graceful shutdown"
        );
        let consumers = RedisTransport::connect(&server.url())
            .await
            .unwrap()
            .consumers(&stream, GROUP)
            .await
            .unwrap();
        assert!(
            consumers.is_empty(),
            "round {round}: the stopped consumer did not leave its group: {consumers:?}"
        );
    }
    let handled_before = handled.len();

    // The next instance handles the rest at once, far below claim_idle (60 s).
    let began = std::time::Instant::now();
    let last = patient_instance(&server.url(), &ns, Some("worker")).await;
    record_work(&last, 4, &handled).await;
    assert!(
        wait_until(PATIENCE, || handled.len() >= EVENTS as usize).await,
        "the next instance handled {} of {EVENTS}",
        handled.len()
    );
    let rest = began.elapsed();
    last.shutdown().await;
    let items = handled.items();
    assert_eq!(set(&items), (0..EVENTS).collect(), "lost events");
    assert_eq!(items.len(), EVENTS as usize, "events handled twice");
    let slowest_stop = stops.iter().max().copied().unwrap_or_default();
    println!(
        "FIGURES stop_with_backlog: published={EVENTS} rounds={ROUNDS} handled_before_last={handled_before} \
         pending_after_each_stop=0 slowest_stop_ms={} rest_handled_by_next_instance_ms={} duplicates=0 lost=0",
        slowest_stop.as_millis(),
        rest.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_with_the_default_identity_keeps_stream_order_at_concurrency_one() {
    const EVENTS: u64 = 600;
    let server = RedisServer::start();
    let ns = namespace("stop-order");
    let publisher = bus(&server.url(), &ns).await;
    let events: Vec<Work> = (0..EVENTS).map(|n| Work { n }).collect();
    publisher.publish_all(&events).await.unwrap();
    let stream = publisher.channel_of::<Work>();
    let mut conn = plain(&server.url()).await;

    // No instance name configured: the default one, the same for every run of this program.
    let handled = Recorder::default();
    for round in 1..=3 {
        let instance = patient_instance(&server.url(), &ns, None).await;
        record_work(&instance, 1, &handled).await;
        assert_eq!(
            instance.consumer_name(),
            Some(eventbus_core::identity::default_instance().as_str())
        );
        assert!(wait_until(PATIENCE, || handled.len() >= round * 100).await);
        instance.shutdown().await;
        assert_eq!(
            pending_summary(&mut conn, &stream).await.0,
            0,
            "round {round}: entries left pending by a graceful shutdown"
        );
    }
    let began = std::time::Instant::now();
    let last = patient_instance(&server.url(), &ns, None).await;
    record_work(&last, 1, &handled).await;
    assert!(
        wait_until(PATIENCE, || handled.len() >= EVENTS as usize).await,
        "handled {} of {EVENTS}",
        handled.len()
    );
    let rest = began.elapsed();
    last.shutdown().await;
    assert_eq!(
        handled.items(),
        (0..EVENTS).collect::<Vec<_>>(),
        "not handled once each, in stream order"
    );
    println!(
        "FIGURES restart_order: published={EVENTS} restarts=3 in_order=yes rest_handled_ms={}",
        rest.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settle_on_redis_waits_until_the_groups_of_the_bus_have_no_backlog() {
    const EVENTS: u64 = 300;
    let server = RedisServer::start();
    let ns = namespace("settle");
    let publisher = bus(&server.url(), &ns).await;
    let events: Vec<Work> = (0..EVENTS).map(|n| Work { n }).collect();
    publisher.publish_all(&events).await.unwrap();
    let stream = publisher.channel_of::<Work>();

    let consumer = bus(&server.url(), &ns).await;
    let handled = Recorder::default();
    record_work(&consumer, 4, &handled).await;
    let began = std::time::Instant::now();
    eventbus_core::testing::settle(&consumer).await;
    let settled = began.elapsed();
    // Everything was handled and acknowledged when settle returned, not later.
    let handled_at_settle = handled.len();
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let group = transport
        .groups(&stream)
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.name == GROUP)
        .expect("the group exists");
    assert_eq!(handled_at_settle, EVENTS as usize);
    assert_eq!((group.lag, group.pending), (Some(0), 0));

    // A backlog that cannot drain: settle gives up with an error that says so.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stuck = bus(&server.url(), &ns).await;
    let g = gate.clone();
    stuck
        .subscribe_with(
            move |_w: Work| {
                let g = g.clone();
                async move {
                    let _permit = g.acquire().await;
                }
            },
            HandlerOptions::new().group("stuck"),
        )
        .await
        .unwrap();
    let e = eventbus_core::testing::try_settle(&stuck, Duration::from_millis(500))
        .await
        .expect_err("a blocked group does not settle");
    assert!(
        e.to_string()
            .contains("entries unread or pending in its consumer groups"),
        "{e}"
    );
    gate.add_permits(EVENTS as usize);
    eventbus_core::testing::settle(&stuck).await;
    stuck.shutdown().await;
    consumer.shutdown().await;
    println!(
        "FIGURES settle_redis: published={EVENTS} handled_when_settle_returned={handled_at_settle} \
         lag=0 pending=0 settle_ms={}",
        settled.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_idle_consumer_does_not_wait_for_its_blocking_read() {
    let server = RedisServer::start();
    let ns = namespace("stop-idle");
    let mut stops = Vec::new();
    for _ in 0..3 {
        let instance = patient_instance(&server.url(), &ns, Some("idle")).await;
        let handled = Recorder::default();
        record_work(&instance, 4, &handled).await;
        let stream = instance.channel_of::<Work>();
        // Reading: the consumer exists in the group, and blocks (1 s) on an empty stream.
        let transport = RedisTransport::connect(&server.url()).await.unwrap();
        assert!(
            common::wait_until_async(PATIENCE, async || !transport
                .consumers(&stream, GROUP)
                .await
                .unwrap_or_default()
                .is_empty())
            .await
        );
        let began = std::time::Instant::now();
        instance.shutdown().await;
        stops.push(began.elapsed());
    }
    let slowest = stops.iter().max().copied().unwrap_or_default();
    // `CLIENT UNBLOCK` ends the read; without it a stop would wait up to the block time (1 s).
    assert!(
        slowest < Duration::from_millis(500),
        "a stop waited {slowest:?} for a blocking read"
    );
    println!(
        "FIGURES stop_idle: stops=3 slowest_stop_ms={} block_ms=1000",
        slowest.as_millis()
    );
}
