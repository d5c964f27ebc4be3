//! Graceful shutdown of a durable consumer under load: every handler call that started finishes
//! and is acked, nothing is acked that was not handled, and a second consumer of the group gets
//! exactly what the first one did not handle.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, builder, bus, namespace, plain, wait_until};
use eventbus_core::prelude::*;
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
    // published later and those the first read but never started (claimed after claim_idle).
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
