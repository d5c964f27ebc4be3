//! SIGTERM (`docker stop`, Kubernetes, systemd) is a graceful shutdown, bounded by
//! `shutdown_timeout`.
//!
//! The service is a real process: the test binary runs itself again (`sigterm_child_process`,
//! selected with `--exact` and [`CHILD_ENV`]) as a service whose one `#[handler]` is started by
//! `run_registered_handlers`, in a backlog, with handler calls in flight. The parent sends
//! SIGTERM and checks that the process exits with status 0 within the bound, with nothing
//! pending on its consumer, and that the next instance goes on at once, far below `claim_idle`.
//! A call that never finishes is abandoned after `shutdown_timeout`: the process still exits,
//! the entry stays pending under the consumer's name, and the next instance of that name
//! handles it first.
//!
//! Each test prints a `FIGURES` line (`cargo test -p eventbus-redis --test sigterm --
//! --nocapture`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::child::{ChildProcess, TempDir, child_fields, run_child};
use common::{
    PATIENCE, Recorder, RedisServer, append_id, builder, namespace, read_ids, wait_until,
    wait_until_async,
};
use eventbus_core::prelude::*;
use eventbus_redis::RedisTransport;

/// Set in the child: `<hang id or 0>,<redis url>,<namespace>,<directory for its files>`.
const CHILD_ENV: &str = "EVENTBUS_SIGTERM_CHILD";
/// The child's handler works this long per event (simulated work, so that calls are in
/// flight when the signal comes).
const WORK: Duration = Duration::from_millis(40);
/// `claim_idle` of every consumer here: the next instance must never need a claim.
const CLAIM_IDLE: Duration = Duration::from_secs(60);
/// `shutdown_timeout` of the child that drains.
const DRAIN_BOUND: Duration = Duration::from_secs(20);
/// `shutdown_timeout` of the child whose call never finishes.
const ABANDON_BOUND: Duration = Duration::from_secs(1);
const GROUP: &str = "billing";
const INSTANCE: &str = "worker";

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

/// What the child's handler does, given to it as state.
struct Plan {
    dir: PathBuf,
    /// This id's call never finishes.
    hang: Option<u32>,
}

/// The child's one registered handler: notes each call's start and end in a file.
#[handler(group = "billing", concurrency = 4)]
async fn bill(o: OrderCreated, plan: State<Plan>) {
    append_id(&plan.dir.join("started"), o.order_id);
    if plan.hang == Some(o.order_id) {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(WORK).await;
    append_id(&plan.dir.join("handled"), o.order_id);
}

/// Not a test of its own: the service process the tests below start and stop with SIGTERM.
/// Without [`CHILD_ENV`] it returns at once.
#[test]
fn sigterm_child_process() {
    let Some(fields) = child_fields(CHILD_ENV, 4) else {
        return;
    };
    let [hang, url, ns, dir] = &fields[..] else {
        unreachable!("four fields");
    };
    let hang: u32 = hang.parse().expect("a hang id");
    run_child(child_service(
        (hang > 0).then_some(hang),
        url,
        ns,
        Path::new(dir),
    ));
}

/// `run_registered_handlers` until SIGTERM, as a service's `main` would.
async fn child_service(hang: Option<u32>, url: &str, ns: &str, dir: &Path) {
    common::logs();
    let transport = RedisTransport::connect(url)
        .await
        .expect("the child connects");
    let bound = if hang.is_some() {
        ABANDON_BOUND
    } else {
        DRAIN_BOUND
    };
    let bus = Bus::builder()
        .transport(transport)
        .namespace(ns)
        .instance(INSTANCE)
        .state(Plan {
            dir: dir.to_owned(),
            hang,
        })
        .configure(|c| {
            c.claim_idle = CLAIM_IDLE;
            c.shutdown_timeout = bound;
        })
        .build()
        .expect("the child's bus");
    bus.run_registered_handlers()
        .await
        .expect("the child runs its handlers");
}

/// The service process and its directory.
struct Service {
    process: ChildProcess,
    dir: TempDir,
}

impl Service {
    fn spawn(hang: Option<u32>, url: &str, ns: &str) -> Service {
        let dir = TempDir::new("sigterm", ns);
        let process = ChildProcess::spawn(
            "sigterm_child_process",
            CHILD_ENV,
            format!("{},{url},{ns},{}", hang.unwrap_or(0), dir.path().display()),
            // Its log must show the signal and what the stop abandoned.
            &[("RUST_LOG", "eventbus_core=info")],
            dir.path().join("child.log"),
        );
        Service { process, dir }
    }

    fn started(&self) -> Vec<u32> {
        read_ids(&self.dir.path().join("started"))
    }

    fn handled(&self) -> Vec<u32> {
        read_ids(&self.dir.path().join("handled"))
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// Fails the test, with the child's output, when the child exited on its own.
    fn assert_alive(&mut self) {
        self.process.assert_alive();
    }

    /// Sends SIGTERM and waits for the exit (at most [`PATIENCE`] past `bound`): the exit
    /// status and how long it took.
    async fn terminate(&mut self, bound: Duration) -> (ExitStatus, Duration) {
        let began = Instant::now();
        self.process.signal("-TERM");
        let mut status = None;
        let exited = wait_until(bound + PATIENCE, || {
            status = self.process.try_wait();
            status.is_some()
        })
        .await;
        let took = began.elapsed();
        assert!(
            exited,
            "no exit {took:?} after SIGTERM; its output:\n{}",
            self.log()
        );
        (status.expect("exited"), took)
    }
}

/// Publishes `n` events and returns the stream.
async fn backlog(publisher: &Bus, n: u32) -> String {
    let events: Vec<OrderCreated> = (1..=n).map(|order_id| OrderCreated { order_id }).collect();
    publisher.publish_all(&events).await.unwrap();
    publisher.channel_of::<OrderCreated>()
}

/// Pending entries of [`INSTANCE`] in [`GROUP`] (0 when it left the group).
async fn pending_of_instance(transport: &RedisTransport, stream: &str) -> u64 {
    transport
        .consumers(stream, GROUP)
        .await
        .unwrap()
        .iter()
        .find(|c| c.name == INSTANCE)
        .map_or(0, |c| c.pending)
}

/// A bus in this process that subscribes to the group and records `(id, attempt)` per call,
/// one call at a time (in stream order).
async fn next_instance(url: &str, ns: &str, instance: &str) -> (Bus, Recorder<(u32, u32)>) {
    let bus = builder(url, ns)
        .await
        .instance(instance)
        .configure(|c| c.claim_idle = CLAIM_IDLE)
        .build()
        .unwrap();
    let calls: Recorder<(u32, u32)> = Recorder::default();
    let c = calls.clone();
    bus.subscribe_with(
        move |o: OrderCreated, ctx: Context| {
            let c = c.clone();
            async move { c.push((o.order_id, ctx.attempt())) }
        },
        HandlerOptions::new().group(GROUP).concurrency(1),
    )
    .await
    .unwrap();
    (bus, calls)
}

/// Waits until every entry of the group was delivered and acknowledged.
async fn group_done(transport: &RedisTransport, stream: &str) -> bool {
    wait_until_async(PATIENCE, async || {
        let lag = transport
            .groups(stream)
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.name == GROUP)
            .and_then(|g| g.lag);
        lag == Some(0) && transport.pending_count(stream, GROUP).await.unwrap() == 0
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_calls_in_flight_and_leaves_nothing_pending() {
    const EVENTS: u32 = 1_000;
    let server = RedisServer::start();
    let ns = namespace("sigterm-drain");
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let publisher = Bus::builder()
        .transport(transport.clone())
        .namespace(&ns)
        .build()
        .unwrap();
    let stream = backlog(&publisher, EVENTS).await;

    let mut service = Service::spawn(None, &server.url(), &ns);
    let busy = wait_until(PATIENCE, || {
        service.assert_alive();
        service.handled().len() >= 40
    })
    .await;
    assert!(
        busy,
        "the child handled too little; its output:\n{}",
        service.log()
    );
    let in_flight_at_signal = service.started().len() - service.handled().len();
    let (status, drain) = service.terminate(DRAIN_BOUND).await;
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        service.log()
    );
    assert!(drain < DRAIN_BOUND, "the stop took {drain:?}");
    let (started, handled) = (service.started(), service.handled());
    let handled_set: BTreeSet<u32> = handled.iter().copied().collect();
    assert_eq!(
        started.iter().copied().collect::<BTreeSet<u32>>(),
        handled_set,
        "every call that started finished before the exit"
    );
    assert_eq!(
        handled_set.len(),
        handled.len(),
        "the child handled an id twice"
    );
    assert_eq!(pending_of_instance(&transport, &stream).await, 0);
    assert_eq!(transport.pending_count(&stream, GROUP).await.unwrap(), 0);
    let members: Vec<String> = transport
        .consumers(&stream, GROUP)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(
        !members.contains(&INSTANCE.to_owned()),
        "it left its group: {members:?}"
    );

    let began = Instant::now();
    let (next, calls) = next_instance(&server.url(), &ns, "next").await;
    assert!(
        group_done(&transport, &stream).await,
        "the next instance did not finish"
    );
    let finished = began.elapsed();
    let ids: Vec<u32> = calls.items().iter().map(|(id, _)| *id).collect();
    let expected: Vec<u32> = (1..=EVENTS)
        .filter(|id| !handled_set.contains(id))
        .collect();
    assert_eq!(ids, expected, "the rest, once each, in stream order");
    assert!(
        calls.items().iter().all(|(_, attempt)| *attempt == 1),
        "no redelivery"
    );
    assert!(
        finished < CLAIM_IDLE / 10,
        "the next instance took {finished:?}"
    );
    println!(
        "FIGURES sigterm_drain: published={EVENTS} child_handled={} in_flight_at_signal={in_flight_at_signal} \
         sigterm_to_exit_ms={} pending_after=0 next_instance_handled={} next_instance_done_ms={} \
         claim_idle_s={} shutdown_timeout_s={}",
        handled.len(),
        drain.as_millis(),
        ids.len(),
        finished.as_millis(),
        CLAIM_IDLE.as_secs(),
        DRAIN_BOUND.as_secs(),
    );
    next.shutdown().await;
    publisher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_abandons_a_call_that_never_finishes_after_shutdown_timeout() {
    const EVENTS: u32 = 300;
    const HANG: u32 = 5;
    let server = RedisServer::start();
    let ns = namespace("sigterm-abandon");
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let publisher = Bus::builder()
        .transport(transport.clone())
        .namespace(&ns)
        .build()
        .unwrap();
    let stream = backlog(&publisher, EVENTS).await;

    let mut service = Service::spawn(Some(HANG), &server.url(), &ns);
    let busy = wait_until(PATIENCE, || {
        service.assert_alive();
        service.started().contains(&HANG) && service.handled().len() >= 20
    })
    .await;
    assert!(
        busy,
        "the child did not get going; its output:\n{}",
        service.log()
    );
    let (status, took) = service.terminate(ABANDON_BOUND).await;
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        service.log()
    );
    assert!(
        took >= ABANDON_BOUND,
        "it gave up after {took:?}, before {ABANDON_BOUND:?}"
    );
    assert!(
        took < ABANDON_BOUND + Duration::from_secs(2),
        "the stop took {took:?} for a bound of {ABANDON_BOUND:?}"
    );
    let handled: BTreeSet<u32> = service.handled().into_iter().collect();
    assert!(!handled.contains(&HANG));
    assert!(
        service.log().contains("SIGTERM") && service.log().contains("abandoned"),
        "the abandoned call is logged; output:\n{}",
        service.log()
    );
    assert_eq!(
        pending_of_instance(&transport, &stream).await,
        1,
        "the hung entry"
    );
    assert_eq!(transport.pending_count(&stream, GROUP).await.unwrap(), 1);

    let began = Instant::now();
    let (next, calls) = next_instance(&server.url(), &ns, INSTANCE).await;
    assert_eq!(
        next.consumer_name(),
        Some(INSTANCE),
        "the name was released"
    );
    assert!(
        group_done(&transport, &stream).await,
        "the next instance did not finish"
    );
    let finished = began.elapsed();
    let items = calls.items();
    assert_eq!(
        items.first(),
        Some(&(HANG, 2)),
        "the abandoned entry first, redelivered"
    );
    let rest: Vec<u32> = items[1..].iter().map(|(id, _)| *id).collect();
    let expected: Vec<u32> = (1..=EVENTS)
        .filter(|id| *id != HANG && !handled.contains(id))
        .collect();
    assert_eq!(rest, expected, "then the rest, once each, in stream order");
    assert!(
        finished < CLAIM_IDLE / 10,
        "the next instance took {finished:?}"
    );
    println!(
        "FIGURES sigterm_abandon: published={EVENTS} child_handled={} shutdown_timeout_ms={} \
         sigterm_to_exit_ms={} pending_after=1 next_instance_first=({HANG}, attempt 2) \
         next_instance_done_ms={} claim_idle_s={}",
        handled.len(),
        ABANDON_BOUND.as_millis(),
        took.as_millis(),
        finished.as_millis(),
        CLAIM_IDLE.as_secs(),
    );
    next.shutdown().await;
    publisher.shutdown().await;
}
