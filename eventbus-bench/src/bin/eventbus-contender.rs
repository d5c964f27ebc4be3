//! The eventbus contender: S1-S4 through eventbus's public API only (derive,
//! `Bus::builder().transport(RedisTransport::connect(url))`, `subscribe`, `subscribe_with`,
//! `publish`, `publish_all`), plus S5 (backlog memory) and S6 (in-memory bus).
//!
//! `eventbus-contender --scenario S1|S2|S3|S4|S5|S6 [--port PORT] [--n N] [--seconds S]`
//! prints one JSON line. S6 needs no Redis.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use eventbus::prelude::*;
use eventbus::redis::RedisTransport;
use eventbus_bench::{
    Args, HARD, IDLE, Latencies, Order, PUB_BATCH, Pacer, Progress, Report, S2_RATE, S3_BATCH,
    S4_TASKS, Scenario, fail, now_ns, order, peak_rss_kib, secs, unique_name,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const NAME: &str = "eventbus";

/// The order, ephemeral (pub/sub). `transparent`: the payload JSON is exactly the `Order`.
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(ephemeral, name = "bench.orders.OrderLive")]
#[serde(transparent)]
pub struct OrderLive(pub Order);

/// The order, durable (a stream with a consumer group).
#[derive(Event, Serialize, Deserialize, Debug, Clone)]
#[event(name = "bench.orders.OrderPlaced")]
#[serde(transparent)]
pub struct OrderPlaced(pub Order);

/// The S5 group.
const S5_GROUP: &str = "bench-s5";
/// Handler concurrency of S5's slow consumer.
const S5_CONCURRENCY: usize = 8;
/// `publish_all` batch of S5's backlog.
const S5_CHUNK: u64 = 1_000;

#[tokio::main]
async fn main() {
    let args = match Args::from_env() {
        Ok(a) => a,
        Err(e) => fail(NAME, "?", &e),
    };
    let result = match args.scenario {
        Scenario::S1 => pubsub(&args, false).await,
        Scenario::S2 => pubsub(&args, true).await,
        Scenario::S3 => streams(&args).await,
        Scenario::S4 => fan_in(&args).await,
        Scenario::S5 => backlog(&args).await,
        Scenario::S5Publish => publish_backlog(&args).await,
        Scenario::S6 => memory(&args).await,
    };
    match result {
        Ok(report) => report.print(),
        Err(e) => fail(NAME, args.scenario.as_str(), &e),
    }
}

/// A bus on Redis, its transport (for introspection) and its namespace, unique to this run.
async fn redis_bus(
    args: &Args,
    namespace: String,
    configure: impl FnOnce(&mut eventbus::BusConfig),
) -> Result<(Bus, RedisTransport), BoxError> {
    let transport = RedisTransport::connect(&args.url()).await?;
    let bus = Bus::builder()
        .transport(transport.clone())
        .namespace(namespace)
        .configure(configure)
        .build()?;
    Ok((bus, transport))
}

async fn shutdown(bus: &Bus) {
    let _ = tokio::time::timeout(Duration::from_secs(5), bus.shutdown()).await;
}

fn batch<E>(from: u64, to: u64, wrap: impl Fn(Order) -> E) -> Vec<E> {
    (from..to).map(|i| wrap(order(i, now_ns()))).collect()
}

/// S1 (throughput, `publish_all` batches) and S2 (latency, 5,000/s, one `publish` at a time).
async fn pubsub(args: &Args, latency: bool) -> Result<Report, BoxError> {
    let n = args.n;
    let (bus, _transport) = redis_bus(args, unique_name(args.scenario), |_| {}).await?;
    let progress = Arc::new(Progress::new(n));
    let lat = Arc::new(Latencies::with_capacity(if latency {
        n as usize
    } else {
        0
    }));
    let (p, l) = (progress.clone(), lat.clone());
    bus.subscribe(move |ev: OrderLive| {
        if latency {
            l.record(ev.0.sent_ns);
        }
        std::hint::black_box(&ev);
        p.add(1);
        std::future::ready(())
    })
    .await?;

    let start = now_ns();
    if latency {
        let pacer = Pacer::new(S2_RATE);
        for i in 0..n {
            pacer.wait(i).await;
            bus.publish(&OrderLive(order(i, now_ns()))).await?;
        }
    } else {
        let mut i = 0;
        while i < n {
            let end = (i + PUB_BATCH).min(n);
            bus.publish_all(&batch(i, end, OrderLive)).await?;
            i = end;
        }
    }
    let published_s = secs(start, now_ns());
    progress.wait(IDLE, HARD).await;
    let stats = bus.stats();
    shutdown(&bus).await;
    let received = progress.count().min(n);
    let mut report = Report::new(
        NAME,
        args.scenario,
        n,
        received,
        secs(start, progress.end_ns()),
    )
    .with("lost", n - received)
    .with("publish_seconds", published_s)
    .with("dropped", stats.dropped)
    .with("undecodable", stats.undecodable)
    .with("reconnects", stats.reconnects);
    if latency {
        report = report.latencies(&lat);
    }
    Ok(report)
}

/// S3: `publish_all` batches into one stream while one group consumer handles them (the bus
/// reads as many entries as the handler has room for and acks in batches).
async fn streams(args: &Args) -> Result<Report, BoxError> {
    let n = args.n;
    // Keep every entry of the run: the default MAXLEN ~ 100,000 would trim a larger N.
    let max_len = n.max(100_000) * 2;
    let (bus, transport) = redis_bus(args, unique_name(args.scenario), |c| {
        c.default_max_len = Some(max_len)
    })
    .await?;
    let progress = Arc::new(Progress::new(n));
    let p = progress.clone();
    // BENCH_S3_CONCURRENCY=1 shows the default: the consumer then reads one entry per XREADGROUP.
    let concurrency = std::env::var("BENCH_S3_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(S3_BATCH);
    bus.subscribe_with(
        move |ev: OrderPlaced| {
            std::hint::black_box(&ev);
            p.add(1);
            std::future::ready(())
        },
        HandlerOptions::new()
            .group("bench")
            .concurrency(concurrency),
    )
    .await?;

    let start = now_ns();
    let mut i = 0;
    while i < n {
        let end = (i + PUB_BATCH).min(n);
        bus.publish_all(&batch(i, end, OrderPlaced)).await?;
        i = end;
    }
    let published_s = secs(start, now_ns());
    progress.wait(IDLE, HARD).await;
    let end = progress.end_ns();
    // The last acks are sent right after the last handler call: give them a moment.
    let stream = bus.channel_of::<OrderPlaced>();
    let mut pending = u64::MAX;
    for _ in 0..200 {
        pending = transport
            .groups(&stream)
            .await?
            .iter()
            .find(|g| g.name == "bench")
            .map_or(u64::MAX, |g| g.pending);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = bus.stats();
    shutdown(&bus).await;
    let received = progress.count().min(n);
    Ok(
        Report::new(NAME, args.scenario, n, received, secs(start, end))
            .with("lost", n - received)
            .with("pending", pending)
            .with("publish_seconds", published_s)
            .with("undecodable", stats.undecodable)
            .with("concurrency", concurrency as u64),
    )
}

/// S4: 64 tasks publish concurrently through one bus (one multiplexed connection). Publish
/// side only.
async fn fan_in(args: &Args) -> Result<Report, BoxError> {
    let n = args.n;
    let (bus, _transport) = redis_bus(args, unique_name(args.scenario), |_| {}).await?;
    let start = now_ns();
    let tasks: Vec<_> = (0..S4_TASKS)
        .map(|t| {
            let bus = bus.clone();
            let share = n / S4_TASKS + u64::from(t < n % S4_TASKS);
            tokio::spawn(async move {
                for k in 0..share {
                    bus.publish(&OrderLive(order(k * S4_TASKS + t, now_ns())))
                        .await?;
                }
                Ok::<u64, eventbus::Error>(share)
            })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        sent += t.await??;
    }
    let end = now_ns();
    shutdown(&bus).await;
    Ok(Report::new(NAME, args.scenario, n, sent, secs(start, end)).with("tasks", S4_TASKS))
}

/// S5, child process: publishes the backlog with `publish_all` in chunks, then exits.
async fn publish_backlog(args: &Args) -> Result<Report, BoxError> {
    let n = args.n;
    let namespace = args
        .namespace
        .clone()
        .ok_or("S5-publish needs --namespace")?;
    let (bus, _transport) = redis_bus(args, namespace, |c| c.default_max_len = None).await?;
    let start = now_ns();
    let mut i = 0;
    while i < n {
        let end = (i + S5_CHUNK).min(n);
        bus.publish_all(&batch(i, end, OrderPlaced)).await?;
        i = end;
    }
    let seconds = secs(start, now_ns());
    shutdown(&bus).await;
    Ok(Report::new(NAME, args.scenario, n, n, seconds))
}

/// S5: N durable events wait in the stream (published by a child process, so this process's
/// peak RSS is the consumer's alone); a slow handler (1 ms, concurrency 8) works on them for
/// `--seconds`. Reports `VmHWM` as `peak_rss_kib`.
async fn backlog(args: &Args) -> Result<Report, BoxError> {
    let n = args.n;
    let namespace = unique_name(args.scenario);
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["--scenario", "S5-publish", "--port"])
        .arg(args.port.to_string())
        .args(["--n", &n.to_string(), "--namespace", &namespace])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Bounded: the child prints one line, so its pipe never fills.
    let deadline = now_ns() + 300_000_000_000;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if now_ns() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("publishing the backlog took more than 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut line = String::new();
    if let Some(mut out) = child.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut line)?;
    }
    if !status.success() {
        return Err(format!("the backlog publisher failed: {}", line.trim()).into());
    }
    let published: serde_json::Value = serde_json::from_str(line.trim())?;
    let publish_seconds = published["seconds"].as_f64().unwrap_or_default();

    let (bus, transport) = redis_bus(args, namespace, |c| c.default_max_len = None).await?;
    let stream = bus.channel_of::<OrderPlaced>();
    let backlog = transport.stream_len(&stream).await?;
    let rss_before = peak_rss_kib();
    let handled = Arc::new(Progress::new(n));
    let h = handled.clone();
    let start = now_ns();
    bus.subscribe_with(
        move |ev: OrderPlaced| {
            let h = h.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                std::hint::black_box(&ev);
                h.add(1);
            }
        },
        HandlerOptions::new()
            .group(S5_GROUP)
            .concurrency(S5_CONCURRENCY),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs_f64(args.seconds.clamp(0.5, 600.0))).await;
    let seconds = secs(start, now_ns());
    let count = handled.count();
    let peak = peak_rss_kib();
    shutdown(&bus).await;
    let peak_after_shutdown = peak_rss_kib();
    let mut report = Report::new(NAME, args.scenario, n, count, seconds)
        .with("backlog", backlog)
        .with("handled", count)
        .with("publish_seconds", publish_seconds)
        .with("concurrency", S5_CONCURRENCY as u64)
        .with("handler_ms", 1);
    if let (Some(peak), Some(before)) = (peak.max(peak_after_shutdown), rss_before) {
        report = report
            .with("peak_rss_kib", peak)
            .with("rss_before_consumer_kib", before);
    }
    Ok(report)
}

/// S6: the in-memory bus, publish -> handler round trip (durable type: nothing is dropped),
/// JSON both ways through the same codec as Redis. Measured on this multi-thread runtime (what
/// `#[tokio::main]` gives a service) and again on a current-thread runtime (as the criterion
/// bench `eventbus-core/benches/memory_roundtrip.rs` does), reported as `msgs_per_s_current_thread`.
async fn memory(args: &Args) -> Result<Report, BoxError> {
    let n = args.n;
    let (received, seconds, settled) = memory_round_trip(n).await?;
    let single = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(memory_round_trip(n))
    });
    let single = tokio::task::spawn_blocking(move || single.join())
        .await?
        .map_err(|_| "the current-thread run panicked")??;
    let mut report = Report::new(NAME, args.scenario, n, received, seconds)
        .with("ns_per_event", ((seconds * 1e9) / n as f64).round())
        .with("lost", n - received)
        .with("runtime", "multi-thread (2 workers)")
        .with(
            "msgs_per_s_current_thread",
            (single.0 as f64 / single.1).round(),
        );
    if let Err(e) = settled.and(single.2) {
        report = report.with("error", e);
    }
    Ok(report)
}

/// Publishes `n` events one by one on a fresh memory bus and waits until all were handled.
async fn memory_round_trip(n: u64) -> Result<(u64, f64, Result<(), String>), BoxError> {
    let bus = Bus::builder()
        .configure(|c| c.record = Some(false))
        .build()?;
    let progress = Arc::new(Progress::new(n));
    let p = progress.clone();
    bus.subscribe(move |ev: OrderPlaced| {
        std::hint::black_box(&ev);
        p.add(1);
        std::future::ready(())
    })
    .await?;
    let start = now_ns();
    for i in 0..n {
        bus.publish(&OrderPlaced(order(i, now_ns()))).await?;
    }
    let settled = eventbus::testing::try_settle(&bus, HARD)
        .await
        .map_err(|e| e.to_string());
    let seconds = secs(start, now_ns());
    shutdown(&bus).await;
    Ok((progress.count().min(n), seconds, settled))
}
