//! A consumer process dies mid-handler: a real OS process, killed with SIGKILL while it holds
//! pending entries, and a surviving consumer that claims them.
//!
//! The test binary runs itself again as the consumer (`crash_child_process`, selected with
//! `--exact` and the [`CHILD_ENV`] variable). The child's handler appends each id it handled
//! to a file and hangs on every 50th id, so that after eight such ids all of its
//! [`CHILD_CONCURRENCY`] slots hang, mid-handler, and it reads nothing more. It connects as an
//! ACL user that may not run `XACK`: every entry it handled stays pending, as if each one
//! had been handled just before the kill and its ack never reached Redis (the window in which
//! a real crash duplicates work, made as wide as the whole run). The parent waits until the
//! group's pending list shows all of that, kills the child, and a consumer in the parent
//! (`claim_idle` 500 ms) claims the entries and handles the rest of the stream.
//!
//! Without `dedup` every entry the child handled is handled again; with `dedup` the child's
//! marks make the survivor skip them. Each test prints one line of figures (`cargo test -p
//! eventbus-redis --test consumer_crash -- --nocapture` shows them):
//!
//! ```text
//! FIGURES consumer_kill: published=N handled=N lost=0 duplicates=N ...
//! FIGURES consumer_kill_dedup: published=N handled=N lost=0 duplicates=0 ...
//! ```
//!
//! `handled` counts handler calls (child and survivor), `duplicates` the calls beyond the first
//! for an id, `lost` the published ids nobody handled.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use common::child::{ChildProcess, TempDir, child_fields, run_child};
use common::{
    PATIENCE, Recorder, RedisServer, append_id, builder, create_group, namespace, plain, read_ids,
    read_one_as, wait_until_async,
};
use eventbus_core::prelude::*;
use eventbus_redis::RedisTransport;

/// Set in the child: `<redis url>,<namespace>,<dedup|plain>,<directory for its files>`.
const CHILD_ENV: &str = "EVENTBUS_CRASH_CHILD";
/// Events published before the child starts.
const EVENTS: u32 = 500;
/// The child's handler hangs on ids divisible by this.
const HANG_EVERY: u32 = 50;
/// The child's handler calls in flight: once this many hang, it reads nothing more.
const CHILD_CONCURRENCY: usize = 8;
const GROUP: &str = "billing";
const CHILD_USER: &str = "crash-child";
const CHILD_PASSWORD: &str = "no-acks-4d2b";

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

fn handler_options(dedup: bool, concurrency: usize) -> HandlerOptions {
    let options = HandlerOptions::new()
        .group(GROUP)
        .concurrency(concurrency)
        .backoff(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(20));
    if dedup {
        options.dedup(HandlerOptions::DEFAULT_DEDUP_TTL)
    } else {
        options
    }
}

/// Not a test of its own: the consumer process the tests below start and kill. Without
/// [`CHILD_ENV`] it returns at once.
#[test]
fn crash_child_process() {
    let Some(fields) = child_fields(CHILD_ENV, 4) else {
        return;
    };
    let [url, ns, mode, dir] = &fields[..] else {
        unreachable!("four fields");
    };
    run_child(child_consumer(url, ns, mode == "dedup", Path::new(dir)));
}

/// Consumes until killed; see the module docs.
async fn child_consumer(url: &str, ns: &str, dedup: bool, dir: &Path) {
    common::logs();
    let transport = RedisTransport::connect(url)
        .await
        .expect("the child connects");
    let bus = Bus::builder()
        .transport(transport)
        .namespace(ns)
        .instance("child")
        // It must not claim its own unacknowledged entries back while the parent watches.
        .configure(|c| c.claim_idle = Duration::from_secs(600))
        .build()
        .expect("the child's bus");
    let (handled, hung) = (dir.join("handled"), dir.join("hung"));
    bus.subscribe_with(
        move |o: OrderCreated| {
            let (handled, hung) = (handled.clone(), hung.clone());
            async move {
                if o.order_id.is_multiple_of(HANG_EVERY) {
                    append_id(&hung, o.order_id);
                    std::future::pending::<()>().await;
                }
                append_id(&handled, o.order_id);
            }
        },
        handler_options(dedup, CHILD_CONCURRENCY),
    )
    .await
    .expect("the child subscribes");
    // Consumes until killed.
    std::future::pending::<()>().await;
}

/// Starts the consumer process.
fn spawn_child(url: &str, ns: &str, dedup: bool, dir: &Path) -> ChildProcess {
    let mode = if dedup { "dedup" } else { "plain" };
    ChildProcess::spawn(
        "crash_child_process",
        CHILD_ENV,
        format!("{url},{ns},{mode},{}", dir.display()),
        &[],
        dir.join("child.log"),
    )
}

/// What one run counted.
struct Run {
    child_handled: Vec<u32>,
    child_hung: Vec<u32>,
    pending_at_kill: u64,
    survivor_handled: Vec<u32>,
    skipped: u64,
}

impl Run {
    fn calls_per_id(&self) -> HashMap<u32, usize> {
        let mut calls = HashMap::new();
        for id in self.child_handled.iter().chain(&self.survivor_handled) {
            *calls.entry(*id).or_insert(0) += 1;
        }
        calls
    }

    fn lost(&self) -> Vec<u32> {
        let calls = self.calls_per_id();
        (1..=EVENTS).filter(|id| !calls.contains_key(id)).collect()
    }

    fn duplicates(&self) -> usize {
        self.calls_per_id().values().map(|n| n - 1).sum()
    }

    fn figures(&self, name: &str) -> String {
        format!(
            "FIGURES {name}: published={EVENTS} handled={} lost={} duplicates={} \
             child_handled={} child_hung={} pending_at_kill={} survivor_handled={} skipped={}",
            self.child_handled.len() + self.survivor_handled.len(),
            self.lost().len(),
            self.duplicates(),
            self.child_handled.len(),
            self.child_hung.len(),
            self.pending_at_kill,
            self.survivor_handled.len(),
            self.skipped,
        )
    }
}

/// Publishes [`EVENTS`], lets the child take entries until it hangs, kills it, and lets a
/// survivor in this process finish the stream.
async fn kill_a_consumer_mid_handler(dedup: bool) -> Run {
    let child_acl = format!(">{CHILD_PASSWORD}");
    let server = RedisServer::start_with(&[
        "--user", CHILD_USER, "on", &child_acl, "~*", "&*", "+@all", "-xack",
    ]);
    let ns = namespace(if dedup { "kill-dedup" } else { "kill" });
    let dir = TempDir::new("consumer-crash", &ns);
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let publisher = Bus::builder()
        .transport(transport.clone())
        .namespace(&ns)
        .build()
        .unwrap();
    let events: Vec<OrderCreated> = (1..=EVENTS)
        .map(|order_id| OrderCreated { order_id })
        .collect();
    publisher.publish_all(&events).await.unwrap();
    let stream = publisher.channel_of::<OrderCreated>();

    let child_url = format!(
        "redis://{CHILD_USER}:{CHILD_PASSWORD}@127.0.0.1:{}",
        server.port()
    );
    let mut child = spawn_child(&child_url, &ns, dedup, dir.path());
    let (handled_file, hung_file) = (dir.path().join("handled"), dir.path().join("hung"));
    let marks = format!("{ns}.eventbus.dedup:*");
    let mut raw = plain(&server.url()).await;
    // Stuck: every slot hangs, and everything it read is pending with it (no ack got through);
    // with dedup, every id it handled is marked.
    let stuck = wait_until_async(PATIENCE, async || {
        child.assert_alive();
        let handled = read_ids(&handled_file).len() as u64;
        let hung = read_ids(&hung_file).len() as u64;
        // Until the child created the group, there is none (`NOGROUP`).
        let pending = transport
            .consumers(&stream, GROUP)
            .await
            .unwrap_or_default()
            .iter()
            .find(|c| c.name == "child")
            .map_or(0, |c| c.pending);
        let marked = if dedup {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&marks)
                .query_async(&mut raw)
                .await
                .unwrap();
            keys.len() as u64
        } else {
            handled
        };
        hung == CHILD_CONCURRENCY as u64 && pending == handled + hung && marked == handled
    })
    .await;
    assert!(
        stuck,
        "the child did not get stuck holding its entries: handled {}, hung {:?}; its output:\n{}",
        read_ids(&handled_file).len(),
        read_ids(&hung_file),
        child.log()
    );
    let pending_at_kill = transport.pending_count(&stream, GROUP).await.unwrap();
    let status = child.kill();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    let child_handled = read_ids(&handled_file);
    let child_hung = read_ids(&hung_file);

    let survivor = builder(&server.url(), &ns)
        .await
        .instance("survivor")
        .build()
        .unwrap();
    let survived: Recorder<u32> = Recorder::default();
    let s = survived.clone();
    survivor
        .subscribe_with(
            move |o: OrderCreated| {
                let s = s.clone();
                async move { s.push(o.order_id) }
            },
            handler_options(dedup, 16),
        )
        .await
        .unwrap();
    // Done: every entry delivered to the group and acknowledged (each call recorded before).
    let done = wait_until_async(PATIENCE, async || {
        let group = transport
            .groups(&stream)
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.name == GROUP);
        transport.pending_count(&stream, GROUP).await.unwrap() == 0
            && group.is_some_and(|g| g.lag == Some(0))
    })
    .await;
    assert!(
        done,
        "the survivor did not finish: {:?}, pending {:?}, stats {:?}",
        transport.groups(&stream).await,
        transport.pending_count(&stream, GROUP).await,
        survivor.stats()
    );
    let run = Run {
        child_handled,
        child_hung,
        pending_at_kill,
        survivor_handled: survived.items(),
        skipped: survivor.stats().duplicates_skipped,
    };
    survivor.shutdown().await;
    publisher.shutdown().await;

    assert_eq!(run.lost(), Vec::<u32>::new(), "lost ids");
    let child: BTreeSet<u32> = run.child_handled.iter().copied().collect();
    assert_eq!(
        child.len(),
        run.child_handled.len(),
        "the child handled an id twice"
    );
    assert!(
        !child.is_empty(),
        "the child handled nothing before it hung"
    );
    assert_eq!(
        run.pending_at_kill,
        (run.child_handled.len() + run.child_hung.len()) as u64,
        "the child held every entry it read"
    );
    let survivor_ids: BTreeSet<u32> = run.survivor_handled.iter().copied().collect();
    assert_eq!(
        survivor_ids.len(),
        run.survivor_handled.len(),
        "the survivor handled an id twice"
    );
    for id in &run.child_hung {
        assert!(
            survivor_ids.contains(id),
            "hung id {id} was not handled by the survivor"
        );
        assert!(
            !child.contains(id),
            "hung id {id} was recorded by the child"
        );
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_loses_nothing_and_its_unacked_work_is_done_twice() {
    let run = kill_a_consumer_mid_handler(false).await;
    println!("{}", run.figures("consumer_kill"));
    // Every entry the child handled was still pending: the survivor handled it again.
    assert_eq!(
        run.duplicates(),
        run.child_handled.len(),
        "{}",
        run.figures("consumer_kill")
    );
    assert_eq!(run.skipped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dedup_a_killed_consumer_causes_no_duplicates() {
    let run = kill_a_consumer_mid_handler(true).await;
    println!("{}", run.figures("consumer_kill_dedup"));
    assert_eq!(
        run.duplicates(),
        0,
        "{}",
        run.figures("consumer_kill_dedup")
    );
    assert_eq!(
        run.skipped,
        run.child_handled.len() as u64,
        "every handled id skipped once"
    );
}

/// One consumer that read an entry and died (a raw `XREADGROUP`, never acknowledged), and a
/// survivor started `phase` later: how long after the read the survivor handled the entry.
async fn claim_delay(claim_idle: Duration, phase: Duration) -> Duration {
    let server = RedisServer::start();
    let ns = namespace("claim-delay");
    let publisher = builder(&server.url(), &ns).await.build().unwrap();
    let stream = publisher.channel_of::<OrderCreated>();
    let mut raw = plain(&server.url()).await;
    create_group(&mut raw, &stream, GROUP).await;
    publisher
        .publish(&OrderCreated { order_id: 1 })
        .await
        .unwrap();
    let read = read_one_as(&mut raw, &stream, GROUP, "dead").await;
    let read_at = std::time::Instant::now();
    assert_ne!(read, redis::Value::Nil, "the dead consumer read the entry");
    // Not a wait for delivery: it sets where the survivor's claim scans fall relative to the
    // moment the entry becomes claimable (a scan every `claim_idle` would find it up to a whole
    // period late).
    tokio::time::sleep(phase).await;

    let survivor = builder(&server.url(), &ns)
        .await
        .instance("survivor")
        .configure(|c| c.claim_idle = claim_idle)
        .build()
        .unwrap();
    let handled: Recorder<std::time::Instant> = Recorder::default();
    let h = handled.clone();
    survivor
        .subscribe_with(
            move |_: OrderCreated| {
                let h = h.clone();
                async move { h.push(std::time::Instant::now()) }
            },
            handler_options(false, 1),
        )
        .await
        .unwrap();
    let claimed = common::wait_until(claim_idle * 2 + PATIENCE, || handled.len() == 1).await;
    assert!(claimed, "the survivor never claimed the entry");
    survivor.shutdown().await;
    publisher.shutdown().await;
    handled.items()[0] - read_at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entry_is_claimed_at_most_a_tenth_of_claim_idle_after_it_is_due() {
    let claim_idle = Duration::from_secs(1);
    let mut delays = Vec::new();
    for quarter in 1..=3 {
        let delay = claim_delay(claim_idle, claim_idle * quarter / 4).await;
        // Redis counts the idle time from its reply, a moment before `read_at`.
        assert!(
            delay + Duration::from_millis(50) >= claim_idle,
            "claimed after {delay:?}, before claim_idle"
        );
        // A scan every claim_idle / 10, plus the read and the call: far below 1.5 x claim_idle,
        // the worst case of a scan every claim_idle / 2.
        assert!(
            delay < claim_idle.mul_f64(1.3),
            "claimed {delay:?} after the read, claim_idle {claim_idle:?}"
        );
        delays.push(delay.as_millis());
    }
    println!(
        "FIGURES claim_delay: claim_idle_ms={} scan_every_ms=100 survivor_started_ms_after_read=250,500,750 \
         read_to_claim_ms={delays:?} max_past_due_ms={}",
        claim_idle.as_millis(),
        delays.iter().max().unwrap() - claim_idle.as_millis()
    );
}
