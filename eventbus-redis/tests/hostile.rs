//! Hostile payloads over a real Redis: a plain client (a foreign or compromised producer) writes
//! garbage to the stream of a durable event and the channel of an ephemeral one. Each message is
//! dead-lettered with a reason and counted, nothing crashes, and a good event sent after them is
//! still handled. The payload size limit holds on publish and on receive.

mod common;

use std::time::Duration;

use common::{PATIENCE, Recorder, RedisServer, builder, namespace, plain, wait_until};
use eventbus_core::Error;
use eventbus_core::prelude::*;
use eventbus_core::transport::DeadLetter;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.Order")]
struct Order {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "live.Ping")]
struct Ping {
    n: u32,
}

const MIB: usize = 1024 * 1024;

/// The fields of a stream entry, as raw bytes.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// A JSON document of about `len` bytes with the right shape.
fn big_json(len: usize) -> Vec<u8> {
    format!("{{\"n\":1,\"pad\":\"{}\"}}", "x".repeat(len)).into_bytes()
}

/// Payloads that are hostile whatever carries them, with what the dead letter's reason must say
/// (`""`: any reason).
fn hostile_payloads() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        ("random bytes", random_bytes(512, 0x9e37_79b9_7f4a_7c15), ""),
        (
            "invalid UTF-8",
            b"{\"n\":\"\xff\xfe\"}".to_vec(),
            "invalid unicode",
        ),
        ("wrong shape", b"{\"n\":\"seven\"}".to_vec(), "invalid type"),
        ("wrong type", b"\"a string\"".to_vec(), "invalid type"),
        ("truncated", b"{\"n\":1".to_vec(), "EOF"),
        ("nested, unclosed", "[".repeat(100_000).into_bytes(), ""),
        (
            "nested, closed",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            "",
        ),
        (
            "10 MiB",
            big_json(10 * MIB),
            "exceeds the limit of 1048576 bytes",
        ),
        ("empty", Vec::new(), ""),
    ]
}

/// The dead letters of `dlq`, by reason, after waiting until there are `n` of them.
async fn dead_letters(bus: &Bus, dlq: &str, n: usize) -> Vec<DeadLetter> {
    let transport = bus.transport().clone();
    let letters = common::eventually(PATIENCE, async || {
        let letters = transport.dead_letters(dlq, 1000).await.ok()?;
        (letters.len() >= n).then_some(letters)
    })
    .await;
    let letters = match letters {
        Some(l) => l,
        None => {
            let got = transport.dead_letters(dlq, 1000).await.unwrap();
            let reasons: Vec<_> = got.iter().map(|e| &e.letter.reason).collect();
            panic!("{} of {n} dead letters in {dlq}: {reasons:#?}", got.len());
        }
    };
    letters.into_iter().map(|e| e.letter).collect()
}

fn assert_reason(letter: &DeadLetter, label: &str, expected: &str) {
    assert!(
        !letter.reason.is_empty(),
        "{label}: dead-lettered without a reason"
    );
    assert!(
        letter.reason.contains(expected),
        "{label}: reason {:?} does not say {expected:?}",
        letter.reason
    );
    assert!(
        !letter.reason.contains("panicked"),
        "{label}: {}",
        letter.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_over_redis_are_dead_lettered_or_counted_and_good_events_still_flow() {
    let server = RedisServer::start();
    let ns = namespace("hostile");
    let mut raw = plain(&server.url()).await;

    // Durable: hostile stream entries.
    let streams = builder(&server.url(), &ns).await.build().unwrap();
    let orders = Recorder::default();
    let o = orders.clone();
    streams
        .subscribe_with(
            move |e: Order| {
                let o = o.clone();
                async move { o.push(e.n) }
            },
            HandlerOptions::new().group("billing"),
        )
        .await
        .unwrap();
    let stream = streams.channel_of::<Order>();
    let mut entries: Vec<(String, Fields, &str)> = Vec::new();
    for (label, payload, reason) in hostile_payloads() {
        entries.push((label.into(), vec![(b"data".to_vec(), payload)], reason));
    }
    let envelope = |spec: &str| {
        vec![
            (b"specversion".to_vec(), spec.as_bytes().to_vec()),
            (b"id".to_vec(), b"e-1".to_vec()),
            (b"type".to_vec(), b"shop.Order".to_vec()),
            (b"data".to_vec(), b"{\"n\":1}".to_vec()),
        ]
    };
    entries.push((
        "specversion 0.3".into(),
        envelope("0.3"),
        "specversion \"0.3\"",
    ));
    entries.push((
        "specversion 2.0".into(),
        envelope("2.0"),
        "specversion \"2.0\"",
    ));
    entries.push((
        "no data field".into(),
        vec![(b"order".to_vec(), b"1".to_vec())],
        "data` field",
    ));
    entries.push((
        "odd field names".into(),
        vec![
            (b"\xff\xfe".to_vec(), b"{\"n\":1}".to_vec()),
            (Vec::new(), b"x".to_vec()),
        ],
        "data` field",
    ));
    entries.push((
        "structured document, specversion 2.0".into(),
        vec![(
            b"event".to_vec(),
            br#"{"specversion":"2.0","id":"e-2","type":"shop.Order","data":{"n":1}}"#.to_vec(),
        )],
        "",
    ));
    let mut by_id = std::collections::HashMap::new();
    for (label, fields, reason) in &entries {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream).arg("*");
        for (k, v) in fields {
            cmd.arg(&k[..]).arg(&v[..]);
        }
        let id: String = cmd.query_async(&mut raw).await.expect("XADD");
        by_id.insert(id, (label.clone(), *reason));
    }
    streams.publish(&Order { n: 42 }).await.unwrap();
    assert!(
        wait_until(PATIENCE, || orders.items() == vec![42]).await,
        "the good durable event after the hostile entries was not handled: {:?}",
        orders.items()
    );
    let stream_letters = dead_letters(
        &streams,
        &streams.dead_letter_key_of::<Order>(),
        entries.len(),
    )
    .await;
    assert_eq!(stream_letters.len(), entries.len());
    for letter in &stream_letters {
        let id = letter.entry_id.as_deref().expect("the entry id is kept");
        let (label, reason) = &by_id[id];
        assert_reason(letter, label, reason);
        assert_eq!(letter.deliveries, 1, "{label}: retried: {}", letter.reason);
    }
    let size = stream_letters
        .iter()
        .find(|l| l.reason.contains("exceeds the limit"))
        .expect("the 10 MiB entry");
    assert!(
        size.reason.contains(&format!(
            "payload of {} bytes",
            big_json(10 * MIB).len() + "data".len()
        )),
        "the reason names the size: {}",
        size.reason
    );
    let stream_stats = streams.stats();
    assert_eq!(stream_stats.undecodable, entries.len() as u64);
    assert_eq!(stream_stats.dead_lettered, entries.len() as u64);
    assert_eq!(stream_stats.handled, 1);

    // Ephemeral: hostile pub/sub messages.
    let live = builder(&server.url(), &ns).await.build().unwrap();
    let pings = Recorder::default();
    let p = pings.clone();
    live.subscribe(move |e: Ping| {
        let p = p.clone();
        async move { p.push(e.n) }
    })
    .await
    .unwrap();
    let channel = live.channel_of::<Ping>();
    let mut messages: Vec<(String, Vec<u8>, &str)> = hostile_payloads()
        .into_iter()
        .map(|(l, p, r)| (l.to_owned(), p, r))
        .collect();
    for spec in ["0.3", "2.0"] {
        messages.push((
            format!("specversion {spec}"),
            format!(r#"{{"specversion":"{spec}","id":"p-1","type":"live.Ping","data":{{"n":1}}}}"#)
                .into_bytes(),
            "specversion",
        ));
    }
    messages.push((
        "envelope without data".into(),
        br#"{"specversion":"1.0","id":"p-2","type":"live.Ping"}"#.to_vec(),
        "invalid type: null",
    ));
    for (label, payload, _) in &messages {
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&payload[..])
            .query_async(&mut raw)
            .await
            .expect("PUBLISH");
        assert_eq!(receivers, 1, "{label}: the subscriber is gone");
    }
    live.publish(&Ping { n: 7 }).await.unwrap();
    assert!(
        wait_until(PATIENCE, || pings.items() == vec![7]).await,
        "the good ephemeral event after the hostile messages was not handled: {:?}",
        pings.items()
    );
    assert!(
        wait_until(PATIENCE, || live.stats().undecodable
            == messages.len() as u64)
        .await,
        "{:?}",
        live.stats()
    );
    let live_stats = live.stats();
    assert_eq!(live_stats.dropped, 0);
    assert_eq!(live_stats.handled, 1);
    let live_letters =
        dead_letters(&live, &live.dead_letter_key_of::<Ping>(), messages.len()).await;
    assert_eq!(live_letters.len(), messages.len());
    // Pub/sub messages have no id: they come in order on one connection.
    for ((label, _, reason), letter) in messages.iter().zip(&live_letters) {
        assert_reason(letter, label, reason);
    }

    let crashes = stream_letters
        .iter()
        .chain(&live_letters)
        .filter(|l| l.reason.contains("panicked"))
        .count();
    println!(
        "FIGURES hostile: payloads_tried={} dead_lettered={} counted_undecodable={} \
         handled_good={} crashes={crashes}",
        entries.len() + messages.len(),
        stream_stats.dead_lettered + live_stats.dead_lettered,
        stream_stats.undecodable + live_stats.undecodable,
        stream_stats.handled + live_stats.handled,
    );
    streams.shutdown().await;
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_payload_limit_holds_on_publish_and_on_receive() {
    const LIMIT: usize = 64 * 1024;
    let server = RedisServer::start();
    let ns = namespace("limit");
    let bus = builder(&server.url(), &ns)
        .await
        .configure(|c| c.max_payload_bytes = LIMIT)
        .build()
        .unwrap();
    let orders = Recorder::default();
    let pings = Recorder::default();
    let (o, p) = (orders.clone(), pings.clone());
    bus.subscribe(move |e: Order| {
        let o = o.clone();
        async move { o.push(e.n) }
    })
    .await
    .unwrap();
    bus.subscribe(move |e: Ping| {
        let p = p.clone();
        async move { p.push(e.n) }
    })
    .await
    .unwrap();

    // Publish: refused before it reaches Redis.
    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(name = "shop.Big")]
    struct Big {
        pad: String,
    }
    let big = Big {
        pad: "x".repeat(LIMIT),
    };
    match bus.publish(&big).await {
        Err(Error::PayloadTooLarge { size, limit, .. }) => {
            assert_eq!(limit, LIMIT);
            assert!(size > LIMIT);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let mut raw = plain(&server.url()).await;
    let len: u64 = redis::cmd("XLEN")
        .arg(bus.channel_of::<Big>())
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(len, 0, "the oversized event reached Redis");

    // Receive: what another producer sends past the limit is dead-lettered with a reason
    // naming the size and the limit; just below it is handled.
    let over = big_json(LIMIT + 1);
    let under = big_json(LIMIT - 4096);
    for payload in [&over, &under] {
        let _: String = redis::cmd("XADD")
            .arg(bus.channel_of::<Order>())
            .arg("*")
            .arg("data")
            .arg(&payload[..])
            .query_async(&mut raw)
            .await
            .unwrap();
        let _: u64 = redis::cmd("PUBLISH")
            .arg(bus.channel_of::<Ping>())
            .arg(&payload[..])
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    assert!(
        wait_until(PATIENCE, || orders.items() == vec![1]
            && pings.items() == vec![1])
        .await,
        "the payload under the limit was not handled: {:?} {:?}",
        orders.items(),
        pings.items()
    );
    let stream_size = over.len() + "data".len();
    for (dlq, size) in [
        (bus.dead_letter_key_of::<Order>(), stream_size),
        (bus.dead_letter_key_of::<Ping>(), over.len()),
    ] {
        let letters = dead_letters(&bus, &dlq, 1).await;
        assert_eq!(letters.len(), 1, "{dlq}");
        assert_eq!(
            letters[0].reason,
            format!("payload of {size} bytes exceeds the limit of {LIMIT} bytes"),
            "{dlq}"
        );
    }
    assert!(wait_until(Duration::from_secs(2), || bus.stats().undecodable == 2).await);
    bus.shutdown().await;
}
