//! A pub/sub subscriber whose connection is lost counts the loss in
//! `stats().pubsub_disconnects` and logs its likely cause: the server closed it, or the network
//! failed.
//!
//! The subscriber is a real process: the test binary runs itself again
//! (`pubsub_loss_child_process`, selected with `--exact` and [`CHILD_ENV`]). It counts the
//! frames it handles and reports its counters in files.
//!
//! * Server side: the process is stopped with SIGSTOP (a stalled process, a long pause of its
//!   VM) while frames are published, until Redis closes its connection because the frames
//!   waiting for it passed `client-output-buffer-limit pubsub` (256 KiB on the test server).
//!   After SIGCONT it counts one disconnect and logs that the server closed the connection
//!   while it kept running, naming the limit.
//! * Network: a proxy black-holes the connection; the health check finds it dead, counts one
//!   disconnect and logs a failed network.
//!
//! Each test prints a `FIGURES` line (`cargo test -p eventbus-redis --test pubsub_loss --
//! --nocapture`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::child::{ChildProcess, TempDir, child_fields, run_child};
use common::proxy::Proxy;
use common::{PATIENCE, RedisServer, append_id, append_line, namespace, read_ids, read_lines};
use common::{wait_until, wait_until_async};
use eventbus_core::prelude::*;
use eventbus_redis::{RedisOptions, RedisTransport};

/// Set in the child: `<redis url>,<namespace>,<directory for its files>`.
const CHILD_ENV: &str = "EVENTBUS_PUBSUB_LOSS_CHILD";
/// Payload of each frame: a few of them pass the test server's 256 KiB limit.
const FRAME_BYTES: usize = 64 * 1024;
/// Frames published at most while the child is stopped.
const MAX_FRAMES: u32 = 2_000;

#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(ephemeral, name = "loss.Frame")]
struct Frame {
    n: u32,
    pixels: String,
}

/// Not a test of its own: the subscriber process the tests below stop, cut off and read.
/// Without [`CHILD_ENV`] it returns at once.
#[test]
fn pubsub_loss_child_process() {
    let Some(fields) = child_fields(CHILD_ENV, 3) else {
        return;
    };
    let [url, ns, dir] = &fields[..] else {
        unreachable!("three fields");
    };
    run_child(child_subscriber(url, ns, Path::new(dir)));
}

/// Subscribes to the frames, notes each one handled, and writes its counters whenever they
/// change: `<pubsub_disconnects> <reconnects> <dropped>`.
async fn child_subscriber(url: &str, ns: &str, dir: &Path) {
    common::logs();
    let options = RedisOptions::default()
        .response_timeout(Duration::from_millis(500))
        .connection_timeout(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(200))
        .health_check_interval(Duration::from_millis(250));
    let transport = RedisTransport::connect_with(url, options)
        .await
        .expect("the child connects");
    let bus = Bus::builder()
        .transport(transport)
        .namespace(ns)
        .build()
        .expect("the child's bus");
    let handled = dir.join("handled");
    bus.subscribe(move |f: Frame| {
        let handled = handled.clone();
        async move { append_id(&handled, f.n) }
    })
    .await
    .expect("the child subscribes");
    append_line(&dir.join("state"), "ready");
    let mut last = String::new();
    loop {
        let s = bus.stats();
        let now = format!("{} {} {}", s.pubsub_disconnects, s.reconnects, s.dropped);
        if now != last {
            append_line(&dir.join("stats"), &now);
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child's counters, as it last wrote them.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    pubsub_disconnects: u64,
    reconnects: u64,
    dropped: u64,
}

/// The subscriber process and its directory.
struct Subscriber {
    process: ChildProcess,
    dir: TempDir,
}

impl Subscriber {
    async fn spawn(url: &str, ns: &str) -> Subscriber {
        let dir = TempDir::new("pubsub-loss", ns);
        let process = ChildProcess::spawn(
            "pubsub_loss_child_process",
            CHILD_ENV,
            format!("{url},{ns},{}", dir.path().display()),
            &[("RUST_LOG", "eventbus_redis=warn")],
            dir.path().join("child.log"),
        );
        let subscriber = Subscriber { process, dir };
        let ready = wait_until(PATIENCE, || {
            read_lines(&subscriber.file("state")).contains(&"ready".to_owned())
        })
        .await;
        assert!(
            ready,
            "the child did not subscribe; its output:\n{}",
            subscriber.process.log()
        );
        subscriber
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn handled(&self) -> Vec<u32> {
        read_ids(&self.file("handled"))
    }

    fn counters(&self) -> Counters {
        let lines = read_lines(&self.file("stats"));
        let Some(last) = lines.last() else {
            return Counters::default();
        };
        let n: Vec<u64> = last
            .split(' ')
            .map(|v| v.parse().expect("a counter"))
            .collect();
        Counters {
            pubsub_disconnects: n[0],
            reconnects: n[1],
            dropped: n[2],
        }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// The log line that says why the connection was lost, once there is one.
    fn cause_line(&self) -> Option<String> {
        self.log()
            .lines()
            .find(|l| l.contains("it was lost because") || l.contains("connection is lost:"))
            .map(str::to_owned)
    }

    fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Waits until the child counted a lost connection and logged why.
    async fn wait_for_explained_loss(&self) {
        let explained = wait_until(PATIENCE, || {
            self.counters().pubsub_disconnects >= 1 && self.cause_line().is_some()
        })
        .await;
        assert!(
            explained,
            "the loss was not counted and explained: {:?}; its output:\n{}",
            self.counters(),
            self.log()
        );
    }

    /// Publishes frames from `from` on until one reaches the child, then waits until its
    /// counters show the reconnect (they are written every 20 ms).
    async fn wait_until_back(&self, bus: &Bus, from: u32) {
        wait_until_delivered_again(bus, self, from).await;
        assert!(
            wait_until(PATIENCE, || self.counters().reconnects >= 1).await,
            "the reconnect was not counted: {:?}",
            self.counters()
        );
    }
}

async fn publisher(url: &str, ns: &str) -> Bus {
    let transport = RedisTransport::connect(url).await.expect("connect");
    Bus::builder()
        .transport(transport)
        .namespace(ns)
        .build()
        .expect("valid bus")
}

fn frame(n: u32) -> Frame {
    Frame {
        n,
        pixels: "x".repeat(FRAME_BYTES),
    }
}

/// Publishes frames from `from` on until the child handles one: its subscription is back.
/// Returns the first frame handled.
async fn wait_until_delivered_again(bus: &Bus, child: &Subscriber, from: u32) -> u32 {
    let mut n = from;
    let back = wait_until_async(PATIENCE, async || {
        bus.publish(&frame(n)).await.expect("publish");
        n += 1;
        child.handled().iter().any(|h| *h >= from)
    })
    .await;
    assert!(
        back,
        "no frame reached the child after its connection came back; its output:\n{}",
        child.log()
    );
    from
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_redis_disconnects_counts_it_and_names_the_limit() {
    let server = RedisServer::start_with(&["--client-output-buffer-limit", "pubsub 256kb 0 0"]);
    let ns = namespace("server_closed");
    let child = Subscriber::spawn(&server.url(), &ns).await;
    let bus = publisher(&server.url(), &ns).await;
    wait_until_delivered_again(&bus, &child, 0).await;

    // The child stops reading: frames pile up in its socket, then in Redis's output buffer for
    // it, until Redis closes the connection (PUBLISH then reaches nobody).
    child.signal("-STOP");
    let stopped_at = Instant::now();
    let first = 1_000;
    let mut n = first;
    let mut closed = false;
    while n < first + MAX_FRAMES && stopped_at.elapsed() < PATIENCE {
        let receipt = bus.publish(&frame(n)).await.expect("publish");
        n += 1;
        if receipt.receivers == Some(0) {
            closed = true;
            break;
        }
    }
    child.signal("-CONT");
    let resumed_at = Instant::now();
    assert!(
        closed,
        "Redis did not close the stopped subscriber after {} frames",
        n - first
    );
    let published_while_stopped = n - 1 - first;

    child.wait_for_explained_loss().await;
    let explained_after = resumed_at.elapsed();
    child.wait_until_back(&bus, first + MAX_FRAMES).await;

    let cause = child.cause_line().expect("checked above");
    let counters = child.counters();
    let handled_while_stopped = child
        .handled()
        .iter()
        .filter(|h| (first..n).contains(*h))
        .count() as u64;
    let lost = u64::from(published_while_stopped) - handled_while_stopped - counters.dropped;
    println!(
        "FIGURES pubsub_server_closed: published_while_stopped={published_while_stopped} \
         handled={handled_while_stopped} dropped={} lost={lost} pubsub_disconnects={} \
         reconnects={} explained_ms={}",
        counters.dropped,
        counters.pubsub_disconnects,
        counters.reconnects,
        explained_after.as_millis()
    );
    println!("cause: {cause}");
    assert_eq!(counters.pubsub_disconnects, 1, "{counters:?}");
    assert!(counters.reconnects >= 1, "{counters:?}");
    assert!(
        lost > 0,
        "nothing was lost: the test did not make Redis drop frames"
    );
    assert!(
        cause.contains("client-output-buffer-limit pubsub (256 KiB)")
            && (cause.contains("server closed it") || cause.contains("fell behind")),
        "the cause does not say the server closed it over its limit: {cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_cut_off_by_the_network_counts_it_and_says_so() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let ns = namespace("network_failed");
    let child = Subscriber::spawn(&proxy.url(), &ns).await;
    let bus = publisher(&server.url(), &ns).await;
    wait_until_delivered_again(&bus, &child, 0).await;

    proxy.stall();
    let stalled_at = Instant::now();
    child.wait_for_explained_loss().await;
    let found_after = stalled_at.elapsed();
    proxy.resume_new_only();
    child.wait_until_back(&bus, 1_000).await;

    let cause = child.cause_line().expect("checked above");
    let counters = child.counters();
    println!(
        "FIGURES pubsub_network_failed: found_dead_ms={} pubsub_disconnects={} reconnects={}",
        found_after.as_millis(),
        counters.pubsub_disconnects,
        counters.reconnects
    );
    println!("cause: {cause}");
    assert_eq!(counters.pubsub_disconnects, 1, "{counters:?}");
    assert!(counters.reconnects >= 1, "{counters:?}");
    assert!(
        cause.contains("the network failed"),
        "the cause does not say the network failed: {cause}"
    );
}
