//! Consumer identity across restarts: a program restarted on a host gets the same consumer name
//! (`<host>-<binary>` by default), so a group lists one consumer per live instance however often
//! it restarts; two live processes never share a name (the second gets `-2`); a crashed
//! instance restarted under its name takes its name back at once and handles its own pending
//! entries first, in stream order, without waiting for `claim_idle`; and consumers that are gone
//! and own nothing leave the group, while one that owns pending entries stays until they are
//! claimed.
//!
//! The restarts are real processes: the test binary runs itself again as the instance
//! (`identity_child_process`, selected with `--exact` and [`CHILD_ENV`]), stopped with SIGINT
//! (Ctrl-C: a graceful shutdown) or killed with SIGKILL. Each test prints a `FIGURES` line
//! (`cargo test -p eventbus-redis --test identity -- --nocapture`).

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::child::{ChildProcess, TempDir, child_fields, run_child};
use common::{
    PATIENCE, Recorder, RedisServer, append_line, builder, create_group, namespace, plain,
    read_lines, read_one_as, wait_until_async,
};
use eventbus_core::prelude::*;
use eventbus_redis::{RedisOptions, RedisTransport};

/// Set in the child: `<serve|crash>,<redis url>,<namespace>,<directory for its files>`.
const CHILD_ENV: &str = "EVENTBUS_IDENTITY_CHILD";
const GROUP: &str = "billing";
/// An ACL user that may not run `XACK`: whatever a crashing child handles stays pending.
const NOACK_USER: &str = "noack";
const NOACK_PASSWORD: &str = "no-acks-9e1f";

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

/// Not a test of its own: the instance process the tests below start and stop. Without
/// [`CHILD_ENV`] it returns at once.
#[test]
fn identity_child_process() {
    let Some(fields) = child_fields(CHILD_ENV, 4) else {
        return;
    };
    let [mode, url, ns, dir] = &fields[..] else {
        unreachable!("four fields");
    };
    run_child(child_instance(mode, url, ns, Path::new(dir)));
}

/// `serve`: the default identity, handles until Ctrl-C, then shuts down gracefully.
/// `crash`: instance `worker`, one call at a time, never acknowledges (see [`NOACK_USER`]);
/// handles until killed.
async fn child_instance(mode: &str, url: &str, ns: &str, dir: &Path) {
    common::logs();
    let transport = RedisTransport::connect(url)
        .await
        .expect("the child connects");
    let builder = Bus::builder()
        .transport(transport)
        .namespace(ns)
        .configure(|c| c.claim_idle = Duration::from_secs(600));
    let (bus, concurrency) = match mode {
        "serve" => (builder.build().expect("the child's bus"), 2),
        "crash" => (builder.instance("worker").build().expect("the bus"), 1),
        other => panic!("unknown child mode {other:?}"),
    };
    let handled = dir.join(format!("handled-{}", std::process::id()));
    bus.subscribe_with(
        move |o: OrderCreated| {
            let handled = handled.clone();
            async move { append_line(&handled, &o.order_id.to_string()) }
        },
        HandlerOptions::new().group(GROUP).concurrency(concurrency),
    )
    .await
    .expect("the child subscribes");
    let name = bus.consumer_name().expect("a consumer name").to_owned();
    append_line(&dir.join(format!("name-{}", std::process::id())), &name);
    let _ = tokio::signal::ctrl_c().await;
    bus.shutdown().await;
}

/// An instance process.
struct Instance {
    process: ChildProcess,
    dir: PathBuf,
}

impl Instance {
    fn spawn(mode: &str, url: &str, ns: &str, dir: &Path) -> Instance {
        let process = ChildProcess::spawn(
            "identity_child_process",
            CHILD_ENV,
            format!("{mode},{url},{ns},{}", dir.display()),
            &[],
            dir.join(format!("{mode}-{}.log", rand_suffix())),
        );
        Instance {
            process,
            dir: dir.to_owned(),
        }
    }

    /// The consumer name the instance got, once it has one.
    async fn consumer_name(&mut self) -> String {
        let file = self.dir.join(format!("name-{}", self.process.pid()));
        let name = common::eventually(PATIENCE, async || {
            self.process.assert_alive();
            read_lines(&file).into_iter().next()
        })
        .await;
        name.expect("the instance never reported its consumer name")
    }

    fn handled(&self) -> Vec<u32> {
        read_lines(&self.dir.join(format!("handled-{}", self.process.pid())))
            .iter()
            .map(|l| l.parse().expect("a number per line"))
            .collect()
    }

    /// SIGINT (Ctrl-C): a graceful shutdown; waits for the exit.
    fn interrupt(&mut self) -> ExitStatus {
        self.process.signal("-INT");
        self.process.wait()
    }

    /// SIGKILL, then reap it.
    fn kill(&mut self) -> ExitStatus {
        self.process.kill()
    }
}

fn rand_suffix() -> String {
    format!("{:?}", Instant::now()).replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

/// The consumer names of the group, sorted.
async fn consumer_names(transport: &RedisTransport, stream: &str) -> Vec<String> {
    let mut names: Vec<String> = transport
        .consumers(stream, GROUP)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    names
}

/// Waits until the group lists exactly `expected` (sorted).
async fn wait_for_consumers(transport: &RedisTransport, stream: &str, expected: &[&str]) {
    let ok = wait_until_async(PATIENCE, async || {
        consumer_names(transport, stream).await == expected
    })
    .await;
    assert!(
        ok,
        "the group lists {:?}, expected {expected:?}",
        consumer_names(transport, stream).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_reuse_one_consumer_name_and_live_processes_never_share_one() {
    let server = RedisServer::start();
    let ns = namespace("restarts");
    let dir = TempDir::new("identity", &ns);
    let url = server.url();
    let transport = RedisTransport::connect(&url).await.unwrap();
    let publisher = common::bus(&url, &ns).await;
    let stream = publisher.channel_of::<OrderCreated>();
    // The child is this test binary: its default name is this process's default name.
    let base = eventbus_core::identity::default_instance();
    let second = format!("{base}-2");

    // Five restarts, one after the other: one consumer, always the same.
    let mut most_listed = 0;
    for round in 1..=5u32 {
        let mut instance = Instance::spawn("serve", &url, &ns, dir.path());
        assert_eq!(instance.consumer_name().await, base);
        wait_for_consumers(&transport, &stream, &[&base]).await;
        most_listed = most_listed.max(consumer_names(&transport, &stream).await.len());
        publisher
            .publish(&OrderCreated { order_id: round })
            .await
            .unwrap();
        assert!(
            wait_until_async(PATIENCE, async || instance.handled() == vec![round]).await,
            "round {round}: handled {:?}",
            instance.handled()
        );
        let status = instance.interrupt();
        assert!(
            status.success(),
            "round {round}: the instance exited with {status}"
        );
        // It left the group and released its name.
        wait_for_consumers(&transport, &stream, &[]).await;
        assert_eq!(transport.pending_count(&stream, GROUP).await.unwrap(), 0);
    }

    // Two live processes with the same base name: the second gets its own name.
    let mut a = Instance::spawn("serve", &url, &ns, dir.path());
    assert_eq!(a.consumer_name().await, base);
    let mut b = Instance::spawn("serve", &url, &ns, dir.path());
    assert_eq!(b.consumer_name().await, second);
    let mut both = vec![base.as_str(), second.as_str()];
    both.sort();
    wait_for_consumers(&transport, &stream, &both).await;
    let events: Vec<OrderCreated> = (100..140)
        .map(|order_id| OrderCreated { order_id })
        .collect();
    publisher.publish_all(&events).await.unwrap();
    assert!(
        wait_until_async(PATIENCE, async || a.handled().len() + b.handled().len()
            == 40)
        .await,
        "two instances handled {} and {} of 40",
        a.handled().len(),
        b.handled().len()
    );
    let mut all = a.handled();
    all.extend(b.handled());
    assert_eq!(all.iter().copied().collect::<BTreeSet<_>>().len(), 40);
    let (by_a, by_b) = (a.handled().len(), b.handled().len());

    assert!(a.interrupt().success());
    wait_for_consumers(&transport, &stream, &[&second]).await;
    // The base name is free again: the next start takes it, next to the live `-2`.
    let mut c = Instance::spawn("serve", &url, &ns, dir.path());
    assert_eq!(c.consumer_name().await, base);
    wait_for_consumers(&transport, &stream, &both).await;
    assert!(b.interrupt().success());
    assert!(c.interrupt().success());
    wait_for_consumers(&transport, &stream, &[]).await;
    publisher.shutdown().await;
    println!(
        "FIGURES restarts: restarts=5 consumers_listed_max={most_listed} consumers_after=0 \
         two_live_names={base},{second} handled_by_each={by_a},{by_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_buses_with_one_instance_name_get_different_consumer_names() {
    let server = RedisServer::start();
    let ns = namespace("twins");
    let url = server.url();
    let handled = Recorder::default();
    let mut buses = Vec::new();
    for _ in 0..3 {
        let bus = builder(&url, &ns).await.instance("twin").build().unwrap();
        let h = handled.clone();
        bus.subscribe_with(
            move |o: OrderCreated| {
                let h = h.clone();
                async move { h.push(o.order_id) }
            },
            HandlerOptions::new().group(GROUP),
        )
        .await
        .unwrap();
        buses.push(bus);
    }
    let names: Vec<&str> = buses.iter().filter_map(|b| b.consumer_name()).collect();
    assert_eq!(names, ["twin", "twin-2", "twin-3"]);
    let transport = RedisTransport::connect(&url).await.unwrap();
    let stream = buses[0].channel_of::<OrderCreated>();
    wait_for_consumers(&transport, &stream, &["twin", "twin-2", "twin-3"]).await;
    for bus in buses {
        bus.shutdown().await;
    }
    wait_for_consumers(&transport, &stream, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_restarted_under_its_name_handles_its_pending_entries_first_in_order() {
    const EVENTS: u32 = 40;
    let noack = format!(">{NOACK_PASSWORD}");
    let server = RedisServer::start_with(&[
        "--user", NOACK_USER, "on", &noack, "~*", "&*", "+@all", "-xack",
    ]);
    let ns = namespace("crash-restart");
    let dir = TempDir::new("identity", &ns);
    let url = server.url();
    let transport = RedisTransport::connect(&url).await.unwrap();
    let publisher = common::bus(&url, &ns).await;
    let events: Vec<OrderCreated> = (1..=EVENTS)
        .map(|order_id| OrderCreated { order_id })
        .collect();
    publisher.publish_all(&events).await.unwrap();
    let stream = publisher.channel_of::<OrderCreated>();

    // The instance handles in order, its acks never reach Redis, and it dies.
    let child_url = format!(
        "redis://{NOACK_USER}:{NOACK_PASSWORD}@127.0.0.1:{}",
        server.port()
    );
    let mut doomed = Instance::spawn("crash", &child_url, &ns, dir.path());
    assert_eq!(doomed.consumer_name().await, "worker");
    let held = wait_until_async(PATIENCE, async || {
        let pending = transport
            .consumers(&stream, GROUP)
            .await
            .unwrap_or_default()
            .iter()
            .find(|c| c.name == "worker")
            .map_or(0, |c| c.pending);
        doomed.handled().len() >= 10 && pending >= 10
    })
    .await;
    assert!(
        held,
        "the instance did not handle entries: {:?}",
        doomed.handled()
    );
    let status = doomed.kill();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    let handled_before_crash = doomed.handled();
    let pending_at_kill = transport.pending_count(&stream, GROUP).await.unwrap();
    // What the dead instance read is pending under its name, its lease is still there.
    assert!(pending_at_kill >= handled_before_crash.len() as u64);
    let mut raw = plain(&url).await;
    let lease: Option<String> = redis::cmd("GET")
        .arg(format!("{ns}.eventbus.instance:worker"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        lease.is_some(),
        "the crashed instance's lease expired already"
    );

    // Restarted under the same name, claims 60 s away: only its own pending list can deliver
    // the dead instance's entries now, first and in order.
    let began = Instant::now();
    let restarted = builder(&url, &ns)
        .await
        .instance("worker")
        .configure(|c| c.claim_idle = Duration::from_secs(60))
        .build()
        .unwrap();
    let calls: Recorder<(u32, Duration)> = Recorder::default();
    let c = calls.clone();
    restarted
        .subscribe_with(
            move |o: OrderCreated| {
                let c = c.clone();
                async move { c.push((o.order_id, began.elapsed())) }
            },
            HandlerOptions::new().group(GROUP),
        )
        .await
        .unwrap();
    let subscribed = began.elapsed();
    assert_eq!(restarted.consumer_name(), Some("worker"));
    assert!(
        common::wait_until(PATIENCE, || calls.len() == EVENTS as usize).await,
        "the restarted instance handled {} of {EVENTS}",
        calls.len()
    );
    let total = began.elapsed();
    let items = calls.items();
    let order: Vec<u32> = items.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        order,
        (1..=EVENTS).collect::<Vec<_>>(),
        "not in stream order"
    );
    let first = items[0].1;
    assert!(
        first < Duration::from_secs(5),
        "first redelivery after {first:?}"
    );
    assert!(
        wait_until_async(PATIENCE, async || transport
            .pending_count(&stream, GROUP)
            .await
            .unwrap()
            == 0)
        .await
    );
    restarted.shutdown().await;
    publisher.shutdown().await;
    println!(
        "FIGURES crash_restart: published={EVENTS} handled_before_crash={} pending_at_kill={pending_at_kill} \
         name_taken_back_ms={} first_redelivery_ms={} all_handled_ms={} in_order=yes claim_idle_ms=60000",
        handled_before_crash.len(),
        subscribed.as_millis(),
        first.as_millis(),
        total.as_millis()
    );
}

/// A lease value as another machine's instance would write it.
const REMOTE_HOLDER: &str =
    "eventbus host=elsewhere boot=another-machine pidns=pid:[1] uid=0 pid=1 start=1 nonce=n";

async fn durable_bus(url: &str, ns: &str, instance: &str) -> Bus {
    let bus = builder(url, ns).await.instance(instance).build().unwrap();
    bus.subscribe_with(
        |_o: OrderCreated| async {},
        HandlerOptions::new().group(GROUP),
    )
    .await
    .unwrap();
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_leased_on_another_machine_is_taken_when_its_lease_expires_unrenewed() {
    let server = RedisServer::start();
    let ns = namespace("remote-dead");
    let mut raw = plain(&server.url()).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{ns}.eventbus.instance:remote"))
        .arg(REMOTE_HOLDER)
        .arg("PX")
        .arg(1500)
        .query_async(&mut raw)
        .await
        .unwrap();
    let began = Instant::now();
    let bus = durable_bus(&server.url(), &ns, "remote").await;
    let waited = began.elapsed();
    assert_eq!(bus.consumer_name(), Some("remote"));
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(5),
        "waited {waited:?} for a lease of 1.5 s"
    );
    bus.shutdown().await;
    println!(
        "FIGURES remote_expired: lease_left_ms=1500 waited_ms={}",
        waited.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_leased_and_renewed_on_another_machine_makes_the_bus_take_the_next_one() {
    let server = RedisServer::start();
    let ns = namespace("remote-live");
    let key = format!("{ns}.eventbus.instance:remote");
    // Another machine's live instance renews its lease.
    let stop = Arc::new(AtomicBool::new(false));
    let renewing = {
        let (stop, mut raw, key) = (stop.clone(), plain(&server.url()).await, key.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(REMOTE_HOLDER)
                    .arg("PX")
                    .arg(10_000)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let began = Instant::now();
    let bus = durable_bus(&server.url(), &ns, "remote").await;
    let waited = began.elapsed();
    assert_eq!(bus.consumer_name(), Some("remote-2"));
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    bus.shutdown().await;
    stop.store(true, Ordering::SeqCst);
    renewing.await.unwrap();
    println!(
        "FIGURES remote_live: renewed_every_ms=200 next_name_after_ms={}",
        waited.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_lease_lasts_consumer_lease_ttl_and_is_renewed_every_tenth_of_it() {
    let server = RedisServer::start();
    let ns = namespace("lease-ttl");
    let ttl = Duration::from_secs(2);
    let began = Instant::now();
    let bus = builder(&server.url(), &ns)
        .await
        .instance("short")
        .configure(|c| c.consumer_lease_ttl = ttl)
        .build()
        .unwrap();
    bus.subscribe_with(
        |_o: OrderCreated| async {},
        HandlerOptions::new().group(GROUP),
    )
    .await
    .unwrap();
    let mut raw = plain(&server.url()).await;
    let key = format!("{ns}.eventbus.instance:short");
    let mut pttl = async || -> i64 {
        redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap()
    };
    let first = pttl().await;
    assert!(
        first > 0 && first <= 2_000,
        "a lease of {ttl:?} has {first} ms left"
    );
    // Unrenewed, less than 1,500 ms would be left half a second later; renewals every 200 ms
    // keep it near 2 s.
    let renewed = wait_until_async(PATIENCE, async || {
        began.elapsed() > Duration::from_millis(500) && pttl().await > 1_700
    })
    .await;
    assert!(renewed, "the lease was not renewed");
    bus.shutdown().await;
    assert_eq!(pttl().await, -2, "released at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_consumers_that_own_nothing_are_removed_and_owners_of_pending_entries_stay() {
    let server = RedisServer::start();
    let ns = namespace("prune");
    let url = server.url();
    let publisher = common::bus(&url, &ns).await;
    publisher
        .publish_all(&[OrderCreated { order_id: 1 }, OrderCreated { order_id: 2 }])
        .await
        .unwrap();
    let stream = publisher.channel_of::<OrderCreated>();
    // Two consumers of earlier processes (the names of a version without stable names): one
    // owns nothing, the other holds entry 1 pending.
    let mut raw = plain(&url).await;
    create_group(&mut raw, &stream, GROUP).await;
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg(GROUP)
        .arg("host-1111-1")
        .query_async(&mut raw)
        .await
        .unwrap();
    read_one_as(&mut raw, &stream, GROUP, "host-2222-1").await;
    let transport = RedisTransport::connect(&url).await.unwrap();
    // Gone: idle longer than claim_idle (2 s) and than two blocking reads (2 x 0.5 s).
    let claim_idle = Duration::from_secs(2);
    assert!(
        wait_until_async(PATIENCE, async || transport
            .consumers(&stream, GROUP)
            .await
            .unwrap()
            .iter()
            .all(|c| c.idle > claim_idle))
        .await
    );

    let options = RedisOptions::default()
        .block(Duration::from_millis(100))
        .response_timeout(Duration::from_millis(400));
    let fast = RedisTransport::connect_with(&url, options).await.unwrap();
    let bus = Bus::builder()
        .transport(fast)
        .namespace(&ns)
        .instance("live")
        .configure(|c| c.claim_idle = claim_idle)
        .build()
        .unwrap();
    let handled = Recorder::default();
    let h = handled.clone();
    let began = Instant::now();
    bus.subscribe_with(
        move |o: OrderCreated| {
            let h = h.clone();
            async move { h.push(o.order_id) }
        },
        HandlerOptions::new().group(GROUP),
    )
    .await
    .unwrap();
    // At its start the new consumer removed the one that owns nothing, not the other.
    let names = consumer_names(&transport, &stream).await;
    assert!(!names.contains(&"host-1111-1".to_owned()), "{names:?}");
    assert!(names.contains(&"host-2222-1".to_owned()), "{names:?}");
    // Then it claims the entry of the dead one, and the dead one, owning nothing, goes too.
    wait_for_consumers(&transport, &stream, &["live"]).await;
    let pruned = began.elapsed();
    assert!(common::wait_until(PATIENCE, || handled.len() == 2).await);
    let mut ids = handled.items();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    assert_eq!(transport.pending_count(&stream, GROUP).await.unwrap(), 0);
    bus.shutdown().await;
    publisher.shutdown().await;
    println!(
        "FIGURES prune: stale_consumers=2 removed_at_start=1 kept_while_pending=1 \
         all_gone_after_ms={} lost=0",
        pruned.as_millis()
    );
}

/// A lease value of a process of this machine that is gone: what a crashed instance leaves.
fn dead_local_holder() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_owned();
    let mut gone = Command::new("true").spawn().expect("a short-lived process");
    let pid = gone.id();
    gone.wait().expect("reaped");
    let uid = read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a uid")
        .to_owned();
    let pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    format!(
        "eventbus host={} boot={} pidns={} uid={uid} pid={pid} start=1 nonce=gone",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id"),
        pidns.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_takes_the_name_of_a_dead_instance_before_a_free_one() {
    let server = RedisServer::start();
    let ns = namespace("dead-second");
    let url = server.url();
    let publisher = common::bus(&url, &ns).await;
    let events: Vec<OrderCreated> = (1..=3).map(|order_id| OrderCreated { order_id }).collect();
    publisher.publish_all(&events).await.unwrap();
    let stream = publisher.channel_of::<OrderCreated>();
    // A second copy, `svc-2`, died holding entry 1; `svc` stopped gracefully (its name is free).
    let mut raw = plain(&url).await;
    create_group(&mut raw, &stream, GROUP).await;
    read_one_as(&mut raw, &stream, GROUP, "svc-2").await;
    let _: () = redis::cmd("SET")
        .arg(format!("{ns}.eventbus.instance:svc-2"))
        .arg(dead_local_holder())
        .arg("PX")
        .arg(10_000)
        .query_async(&mut raw)
        .await
        .unwrap();

    let bus = builder(&url, &ns)
        .await
        .instance("svc")
        .configure(|c| c.claim_idle = Duration::from_secs(60))
        .build()
        .unwrap();
    let handled = Recorder::default();
    let h = handled.clone();
    bus.subscribe_with(
        move |o: OrderCreated| {
            let h = h.clone();
            async move { h.push(o.order_id) }
        },
        HandlerOptions::new().group(GROUP),
    )
    .await
    .unwrap();
    assert_eq!(bus.consumer_name(), Some("svc-2"));
    assert!(common::wait_until(PATIENCE, || handled.len() == 3).await);
    assert_eq!(handled.items(), [1, 2, 3]);
    // The free name it looked at is free again.
    let free: Option<String> = redis::cmd("GET")
        .arg(format!("{ns}.eventbus.instance:svc"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(free, None);
    bus.shutdown().await;
    publisher.shutdown().await;
}
