//! The reference: S1-S4 written by hand with raw redis-rs, as a careful user would
//! without eventbus. A typed struct serialized with serde_json both ways, one multiplexed
//! connection for publishing (pipelined or concurrent), a dedicated async `PubSub` connection
//! for the subscriber, and for streams `XGROUP CREATE … MKSTREAM`, `XADD`,
//! `XREADGROUP COUNT 100 BLOCK` on a connection of its own without response timeout, and one
//! `XACK` per batch.
//!
//! `raw-redis --scenario S1|S2|S3|S4 --port PORT [--n N]` prints one JSON line;
//! `raw-redis --event-json` prints the event JSON that `redis-benchmark` publishes.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventbus_bench::{
    Args, HARD, IDLE, Latencies, Order, PUB_BATCH, Pacer, Progress, Report, S2_RATE, S3_BATCH,
    S4_TASKS, Scenario, fail, now_ns, order, sample_json, secs, unique_name,
};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const NAME: &str = "raw-redis";

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--event-json") {
        // The event JSON for `redis-benchmark PUBLISH` (scripts/bench, S4's ceiling).
        println!("{}", sample_json());
        return;
    }
    let args = match Args::from_env() {
        Ok(a) => a,
        Err(e) => fail(NAME, "?", &e),
    };
    let result = match args.scenario {
        Scenario::S1 => pubsub(&args, false).await,
        Scenario::S2 => pubsub(&args, true).await,
        Scenario::S3 => streams(&args).await,
        Scenario::S4 => fan_in(&args).await,
        other => Err(format!(
            "{} is measured for eventbus only (the reference covers S1-S4)",
            other.as_str()
        )
        .into()),
    };
    match result {
        Ok(report) => report.print(),
        Err(e) => fail(NAME, args.scenario.as_str(), &e),
    }
}

/// The publishing connection: multiplexed, with a response timeout generous enough for a
/// loaded 2-core machine.
async fn publisher(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

fn encode(i: u64) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&order(i, now_ns()))
}

/// S1 (throughput, pipelined publishes) and S2 (latency, 5,000/s, one publish at a time).
async fn pubsub(args: &Args, latency: bool) -> Result<Report, BoxError> {
    let n = args.n;
    let client = Client::open(args.url())?;
    let mut conn = publisher(&client).await?;
    let channel = unique_name(args.scenario);

    let mut sub = client.get_async_pubsub().await?;
    sub.subscribe(&channel).await?;
    let progress = Arc::new(Progress::new(n));
    let lat = Arc::new(Latencies::with_capacity(if latency {
        n as usize
    } else {
        0
    }));
    let disconnected = Arc::new(AtomicBool::new(false));
    let (p, l, d) = (progress.clone(), lat.clone(), disconnected.clone());
    let subscriber = tokio::spawn(async move {
        let mut messages = sub.into_on_message();
        let mut undecodable = 0u64;
        while let Some(msg) = messages.next().await {
            match serde_json::from_slice::<Order>(msg.get_payload_bytes()) {
                Ok(order) => {
                    if latency {
                        l.record(order.sent_ns);
                    }
                    std::hint::black_box(&order);
                    if p.add(1) {
                        return undecodable;
                    }
                }
                Err(_) => undecodable += 1,
            }
        }
        // The stream ended: Redis closed the connection (e.g. output buffer limit).
        d.store(true, Ordering::Relaxed);
        undecodable
    });

    let start = now_ns();
    if latency {
        let pacer = Pacer::new(S2_RATE);
        for i in 0..n {
            pacer.wait(i).await;
            let _: i64 = conn.publish(&channel, encode(i)?).await?;
        }
    } else {
        let mut i = 0;
        while i < n {
            let end = (i + PUB_BATCH).min(n);
            let mut pipe = redis::pipe();
            for j in i..end {
                pipe.publish(&channel, encode(j)?).ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
            i = end;
        }
    }
    let published_s = secs(start, now_ns());
    progress.wait(IDLE, HARD).await;
    subscriber.abort();
    let undecodable = subscriber.await.unwrap_or(0);
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
    .with("undecodable", undecodable)
    .with("disconnected", disconnected.load(Ordering::Relaxed));
    if latency {
        report = report.latencies(&lat);
    }
    Ok(report)
}

/// S3: XADD (pipelined) into one stream while one group consumer reads 100 at a time and acks
/// each batch with one XACK, or with `--ack each` every entry with its own XACK once handled.
async fn streams(args: &Args) -> Result<Report, BoxError> {
    let n = args.n;
    let client = Client::open(args.url())?;
    let mut conn = publisher(&client).await?;
    let stream = unique_name(args.scenario);
    let group = "bench";
    let () = conn.xgroup_create_mkstream(&stream, group, "0").await?;

    // A blocking read must not share the publishing connection, nor have a response timeout.
    let mut reader = client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await?;
    let progress = Arc::new(Progress::new(n));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s, key) = (progress.clone(), stop.clone(), stream.clone());
    let ack_each = args.ack_each;
    let consumer = tokio::spawn(async move {
        let opts = StreamReadOptions::default()
            .group(group, "consumer-1")
            .count(S3_BATCH)
            .block(1000);
        let mut undecodable = 0u64;
        while !s.load(Ordering::Relaxed) && !p.reached() {
            let reply: Option<StreamReadReply> =
                reader.xread_options(&[&key], &[">"], &opts).await?;
            let Some(reply) = reply else { continue };
            let mut ids = Vec::with_capacity(S3_BATCH);
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                match entry.map.get("data") {
                    Some(Value::BulkString(json)) => match serde_json::from_slice::<Order>(json) {
                        Ok(order) => {
                            std::hint::black_box(&order);
                        }
                        Err(_) => undecodable += 1,
                    },
                    _ => undecodable += 1,
                }
                if ack_each {
                    let _: i64 = reader.xack(&key, group, &[&entry.id]).await?;
                    p.add(1);
                } else {
                    ids.push(entry.id);
                }
            }
            if !ids.is_empty() {
                let _: i64 = reader.xack(&key, group, &ids).await?;
                p.add(ids.len() as u64);
            }
        }
        Ok::<u64, redis::RedisError>(undecodable)
    });

    let start = now_ns();
    let mut i = 0;
    while i < n {
        let end = (i + PUB_BATCH).min(n);
        let mut pipe = redis::pipe();
        for j in i..end {
            pipe.xadd(&stream, "*", &[("data", encode(j)?)]).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        i = end;
    }
    let published_s = secs(start, now_ns());
    progress.wait(IDLE, HARD).await;
    stop.store(true, Ordering::Relaxed);
    let undecodable = match tokio::time::timeout(Duration::from_secs(5), consumer).await {
        Ok(Ok(r)) => r?,
        Ok(Err(join)) => return Err(join.into()),
        Err(_) => return Err("the consumer did not stop within 5 s".into()),
    };
    let pending: redis::streams::StreamPendingReply = conn.xpending(&stream, group).await?;
    let _: i64 = conn.del(&stream).await?;
    let received = progress.count().min(n);
    Ok(Report::new(
        NAME,
        args.scenario,
        n,
        received,
        secs(start, progress.end_ns()),
    )
    .with("lost", n - received)
    .with("pending", pending.count() as u64)
    .with("publish_seconds", published_s)
    .with("undecodable", undecodable)
    .with("ack", if ack_each { "each" } else { "batch" }))
}

/// S4: 64 tasks publish concurrently through one multiplexed connection, each waiting for its
/// own replies (the connection pipelines them). Publish side only.
async fn fan_in(args: &Args) -> Result<Report, BoxError> {
    let n = args.n;
    let client = Client::open(args.url())?;
    let conn = publisher(&client).await?;
    let channel = unique_name(args.scenario);
    let start = now_ns();
    let tasks: Vec<_> = (0..S4_TASKS)
        .map(|t| {
            let mut conn = conn.clone();
            let channel = channel.clone();
            let share = n / S4_TASKS + u64::from(t < n % S4_TASKS);
            tokio::spawn(async move {
                for k in 0..share {
                    let json = encode(k * S4_TASKS + t)?;
                    let _: i64 = conn.publish(&channel, json).await?;
                }
                Ok::<u64, BoxError>(share)
            })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        sent += t.await??;
    }
    let end = now_ns();
    Ok(Report::new(NAME, args.scenario, n, sent, secs(start, end)).with("tasks", S4_TASKS))
}
