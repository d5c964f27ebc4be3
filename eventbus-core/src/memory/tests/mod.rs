//! Specifications of the memory transport, driven through the `Transport` trait.

mod pubsub;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::MemoryTransport;
use crate::Durability;
use crate::envelope::{self, Encoded, Metadata};
use crate::stats::Stats;
use crate::transport::{
    ConsumeMode, ConsumerSpec, Delivery, Outgoing, StartFrom, StreamConsumer, SubscribeSpec,
    Target, Transport,
};

/// An event `{"n": n}` with id `ev-<n>`.
fn event(n: u64) -> Encoded {
    let meta = Metadata {
        id: format!("ev-{n}"),
        source: "tests".into(),
        event_type: "tests.Numbered".into(),
        ..Metadata::default()
    };
    Encoded::new(meta, &json!({ "n": n })).expect("a JSON value serializes")
}

fn ephemeral(channel: &str, n: u64) -> Outgoing {
    Outgoing {
        channel: channel.into(),
        durability: Durability::Ephemeral,
        max_len: None,
        message: event(n),
    }
}

fn durable(stream: &str, n: u64) -> Outgoing {
    Outgoing {
        channel: stream.into(),
        durability: Durability::Durable,
        max_len: None,
        message: event(n),
    }
}

fn subscription(target: Target, capacity: usize) -> SubscribeSpec {
    SubscribeSpec {
        target,
        capacity,
        capacity_bytes: usize::MAX,
        stats: Arc::new(Stats::default()),
    }
}

fn group(stream: &str, group: &str, consumer: &str) -> ConsumerSpec {
    ConsumerSpec {
        stream: stream.into(),
        group: group.into(),
        consumer: consumer.into(),
        mode: ConsumeMode::Group,
        start: StartFrom::Beginning,
        claim_idle: Duration::from_secs(60),
        stats: Arc::new(Stats::default()),
    }
}

/// The `n` of a delivered event.
fn n_of(d: &Delivery) -> u64 {
    let decoded = envelope::decode(&d.channel, &d.body).expect("decodes");
    let v: Value = decoded.payload(&d.channel).expect("payload is JSON");
    v["n"].as_u64().expect("has n")
}

fn ids(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| d.entry_id.clone().expect("entry id"))
        .collect()
}

/// Fetches until `want` deliveries arrived; fails after five seconds.
async fn fetch_n(consumer: &dyn StreamConsumer, want: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while out.len() < want {
            out.extend(consumer.fetch(want - out.len()).await.expect("fetch"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {want} deliveries within 5 s", out.len()));
    out
}

fn activity(t: &MemoryTransport) -> usize {
    t.activity().expect("memory counts activity").get()
}

#[test]
fn entry_ids_print_and_parse_like_redis() {
    use super::streams::EntryId;
    for (ms, seq, text) in [
        (0, 0, "0-0"),
        (1_700_000_000_123, 7, "1700000000123-7"),
        (
            u64::MAX,
            u64::MAX,
            "18446744073709551615-18446744073709551615",
        ),
    ] {
        let id = EntryId { ms, seq };
        assert_eq!(id.text(), text);
        assert_eq!(id.to_string(), text);
        assert_eq!(EntryId::parse(text), Some(id));
    }
    assert_eq!(EntryId::parse("42"), Some(EntryId { ms: 42, seq: 0 }));
    assert_eq!(EntryId::parse("x-1"), None);
}

#[test]
fn position_after_finds_the_first_later_entry() {
    use super::streams::{Entry, EntryId, position_after};
    use std::collections::VecDeque;
    for len in 0..40u64 {
        let entries: VecDeque<Entry> = (0..len)
            .map(|i| Entry {
                id: EntryId {
                    ms: 10 + 2 * i,
                    seq: 0,
                },
                fields: Vec::new(),
            })
            .collect();
        for ms in 0..(14 + 2 * len) {
            let id = EntryId { ms, seq: 0 };
            let expected = entries.iter().filter(|e| e.id <= id).count();
            assert_eq!(
                position_after(&entries, id),
                expected,
                "len {len}, after {ms}"
            );
        }
    }
}
