use std::collections::BTreeSet;

use bytes::Bytes;

use super::*;
use crate::envelope::WireBody;
use crate::transport::DeadLetter;

const ORDERS: &str = "shop.orders.OrderCreated";

#[tokio::test]
async fn entry_ids_increase_and_receipts_carry_them() {
    let t = MemoryTransport::new();
    let mut last = (0u64, 0u64);
    for n in 0..50 {
        let r = t.publish(durable(ORDERS, n)).await.unwrap();
        assert_eq!(
            (r.receivers, r.event_id.as_str()),
            (None, &*format!("ev-{n}"))
        );
        let id = r.stream_id.unwrap();
        let (ms, seq) = id.split_once('-').unwrap();
        let this = (ms.parse().unwrap(), seq.parse().unwrap());
        assert!(this > last, "{this:?} after {last:?}");
        last = this;
    }
    let entries = t.stream_entries(ORDERS);
    assert_eq!(entries.len(), 50);
    let (_, fields) = &entries[0];
    // One field, `event`, holding the CloudEvents JSON document.
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].0, "event");
    let doc: serde_json::Value = serde_json::from_slice(&fields[0].1).unwrap();
    assert_eq!(doc["id"], "ev-0");
    assert_eq!(doc["specversion"], "1.0");
}

#[tokio::test]
async fn every_group_gets_every_entry() {
    let t = MemoryTransport::new();
    let billing = t.consume(group(ORDERS, "billing", "b1")).await.unwrap();
    let shipping = t.consume(group(ORDERS, "shipping", "s1")).await.unwrap();
    for n in 0..5 {
        t.publish(durable(ORDERS, n)).await.unwrap();
    }
    assert_eq!(activity(&t), 10);
    for consumer in [&billing, &shipping] {
        let got = fetch_n(&**consumer, 5).await;
        assert_eq!(
            got.iter().map(n_of).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(
            got.iter()
                .all(|d| d.delivery_count == 1 && d.token.is_none())
        );
        assert!(matches!(got[0].body, WireBody::Fields(_)));
        consumer.ack(&ids(&got)).await.unwrap();
    }
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn consumers_of_one_group_split_the_entries() {
    let t = MemoryTransport::new();
    let c1 = t.consume(group(ORDERS, "billing", "c1")).await.unwrap();
    let c2 = t.consume(group(ORDERS, "billing", "c2")).await.unwrap();
    for n in 0..10 {
        t.publish(durable(ORDERS, n)).await.unwrap();
    }
    let a = c1.fetch(4).await.unwrap();
    let b = c2.fetch(100).await.unwrap();
    assert_eq!((a.len(), b.len()), (4, 6));
    let all: BTreeSet<u64> = a.iter().chain(&b).map(n_of).collect();
    assert_eq!(all, (0..10).collect());
    assert_eq!(t.groups(ORDERS)[0].consumers, 2);
    let pending = t.pending(ORDERS, "billing");
    assert_eq!(pending.iter().filter(|p| p.consumer == "c1").count(), 4);
    assert_eq!(pending.iter().filter(|p| p.consumer == "c2").count(), 6);
}

#[tokio::test]
async fn ack_removes_entries_from_the_pending_list() {
    let t = MemoryTransport::new();
    let c = t.consume(group(ORDERS, "billing", "c1")).await.unwrap();
    for n in 0..3 {
        t.publish(durable(ORDERS, n)).await.unwrap();
    }
    let got = fetch_n(&*c, 3).await;
    let info = &t.groups(ORDERS)[0];
    assert_eq!((info.pending, info.lag), (3, Some(0)));
    assert_eq!(info.last_delivered_id, got[2].entry_id.clone().unwrap());

    c.ack(&ids(&got[..2])).await.unwrap();
    c.ack(&["1-1".to_owned()]).await.unwrap(); // unknown: a no-op, like XACK
    let pending = t.pending(ORDERS, "billing");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, got[2].entry_id.clone().unwrap());
    assert_eq!(activity(&t), 1);
    assert!(c.ack(&["not-an-id".to_owned()]).await.is_err());
}

#[tokio::test]
async fn a_restarted_consumer_gets_its_own_pending_entries_again() {
    let t = MemoryTransport::new();
    let first = t.consume(group(ORDERS, "billing", "host-1")).await.unwrap();
    t.publish(durable(ORDERS, 1)).await.unwrap();
    let got = fetch_n(&*first, 1).await;
    assert_eq!(got[0].delivery_count, 1);
    drop(first); // a crash: nothing acked

    let again = t.consume(group(ORDERS, "billing", "host-1")).await.unwrap();
    t.publish(durable(ORDERS, 2)).await.unwrap();
    let got = fetch_n(&*again, 2).await;
    assert_eq!(n_of(&got[0]), 1);
    assert_eq!(got[0].delivery_count, 2);
    assert_eq!((n_of(&got[1]), got[1].delivery_count), (2, 1));
    again.ack(&ids(&got)).await.unwrap();
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn idle_entries_of_a_dead_consumer_are_claimed() {
    let t = MemoryTransport::new();
    let mut spec = group(ORDERS, "billing", "dead");
    spec.claim_idle = Duration::from_millis(50);
    let dead = t.consume(spec.clone()).await.unwrap();
    spec.consumer = "alive".into();
    let alive = t.consume(spec).await.unwrap();

    t.publish(durable(ORDERS, 1)).await.unwrap();
    let got = dead.fetch(10).await.unwrap();
    assert_eq!(got.len(), 1);
    drop((got, dead));

    // `alive` finds nothing new; it claims the entry once it has been idle for 50 ms.
    let claimed = fetch_n(&*alive, 1).await;
    assert_eq!((n_of(&claimed[0]), claimed[0].delivery_count), (1, 2));
    assert_eq!(t.pending(ORDERS, "billing")[0].consumer, "alive");
    alive.ack(&ids(&claimed)).await.unwrap();
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn maxlen_trims_the_stream_and_releases_unread_entries() {
    let t = MemoryTransport::new();
    let c = t.consume(group(ORDERS, "billing", "c1")).await.unwrap();
    t.publish(durable(ORDERS, 0)).await.unwrap();
    let pending = fetch_n(&*c, 1).await; // entry 0 is pending when it gets trimmed
    for n in 1..=5 {
        let mut out = durable(ORDERS, n);
        out.max_len = Some(3);
        t.publish(out).await.unwrap();
    }
    assert_eq!(t.stream_len(ORDERS), 3);
    assert_eq!(t.groups(ORDERS)[0].lag, Some(3));
    let got = fetch_n(&*c, 3).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(
        t.groups(ORDERS)[0].pending,
        4,
        "the trimmed entry stays pending until acked"
    );
    c.ack(&ids(&got)).await.unwrap();
    c.ack(&ids(&pending)).await.unwrap();
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn a_pending_entry_trimmed_away_is_dropped_when_found() {
    let t = MemoryTransport::new();
    let mut spec = group(ORDERS, "billing", "dead");
    spec.claim_idle = Duration::from_millis(20);
    let dead = t.consume(spec.clone()).await.unwrap();
    t.publish(durable(ORDERS, 0)).await.unwrap();
    drop(fetch_n(&*dead, 1).await);
    drop(dead);
    let mut trim = durable(ORDERS, 1);
    trim.max_len = Some(1);
    t.publish(trim).await.unwrap();

    spec.consumer = "alive".into();
    let alive = t.consume(spec).await.unwrap();
    let got = fetch_n(&*alive, 1).await;
    assert_eq!(n_of(&got[0]), 1);
    alive.ack(&ids(&got)).await.unwrap();
    // Wait for the claim scan to find the trimmed entry and release it.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !t.pending(ORDERS, "billing").is_empty() {
            assert!(alive.fetch(10).await.unwrap().is_empty());
        }
    })
    .await
    .expect("the trimmed pending entry is dropped");
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn a_new_group_starts_at_the_beginning_or_now() {
    let t = MemoryTransport::new();
    for n in 0..3 {
        t.publish(durable(ORDERS, n)).await.unwrap();
    }
    assert_eq!(activity(&t), 0, "no group: nobody has work to do");
    let from_start = t.consume(group(ORDERS, "audit", "a")).await.unwrap();
    assert_eq!(activity(&t), 3);
    let mut spec = group(ORDERS, "live", "l");
    spec.start = StartFrom::Now;
    let from_now = t.consume(spec).await.unwrap();
    assert_eq!(t.groups(ORDERS)[1].lag, Some(0));
    t.publish(durable(ORDERS, 3)).await.unwrap();

    let got = fetch_n(&*from_start, 4).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let got_now = fetch_n(&*from_now, 1).await;
    assert_eq!(n_of(&got_now[0]), 3);
    from_start.ack(&ids(&got)).await.unwrap();
    from_now.ack(&ids(&got_now)).await.unwrap();
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn broadcast_readers_each_see_every_later_entry() {
    let t = MemoryTransport::new();
    t.publish(durable(ORDERS, 0)).await.unwrap(); // before the readers: not seen
    let mut spec = group(ORDERS, "", "r1");
    spec.mode = ConsumeMode::Broadcast;
    let r1 = t.consume(spec.clone()).await.unwrap();
    let r2 = t.consume(spec).await.unwrap();
    for n in 1..=3 {
        t.publish(durable(ORDERS, n)).await.unwrap();
    }
    assert_eq!(activity(&t), 6);
    let got1 = fetch_n(&*r1, 3).await;
    assert_eq!(got1.iter().map(n_of).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(got1.iter().all(|d| d.token.is_some()));
    r1.ack(&ids(&got1)).await.unwrap(); // a no-op
    drop(got1);
    assert_eq!(activity(&t), 3);
    drop(r2); // its unread entries are released
    assert_eq!(activity(&t), 0);
    assert!(t.groups(ORDERS).is_empty());
}

#[tokio::test]
async fn fetch_waits_for_a_publish_and_fails_with_closed_after_close() {
    let redis = MemoryTransport::new();
    let t = redis.clone();
    let c = t.consume(group(ORDERS, "billing", "c1")).await.unwrap();
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { fetch_n(&*c, 1).await }
    });
    tokio::task::yield_now().await;
    redis.publish(durable(ORDERS, 9)).await.unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(n_of(&got[0]), 9);

    let blocked = tokio::spawn({
        let c = c.clone();
        async move { c.fetch(10).await }
    });
    tokio::task::yield_now().await;
    t.close().await;
    let batch = tokio::time::timeout(Duration::from_millis(500), blocked)
        .await
        .expect("close wakes the fetch")
        .unwrap();
    assert!(
        matches!(batch, Err(crate::Error::Closed)),
        "a closed consumer says so instead of returning empty batches forever: {batch:?}"
    );
    assert_eq!(
        redis.pending(ORDERS, "billing").len(),
        1,
        "close does not ack"
    );
}

#[tokio::test]
async fn a_dropped_fetch_loses_nothing() {
    let t = MemoryTransport::new();
    let c = t.consume(group(ORDERS, "billing", "c1")).await.unwrap();
    let fetch = c.fetch(10);
    assert!(
        tokio::time::timeout(Duration::from_millis(10), fetch)
            .await
            .is_err()
    );
    t.publish(durable(ORDERS, 1)).await.unwrap();
    assert_eq!(n_of(&fetch_n(&*c, 1).await[0]), 1);
}

fn letter(body: WireBody, channel: &str) -> DeadLetter {
    DeadLetter {
        dlq: format!("{channel}.dlq"),
        channel: channel.into(),
        entry_id: None,
        group: "billing".into(),
        handler: "billing::charge".into(),
        reason: "card declined".into(),
        deliveries: 5,
        body,
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_to_where_they_came_from() {
    let t = MemoryTransport::new();
    let c = t.consume(group(ORDERS, "billing", "c1")).await.unwrap();
    t.publish(durable(ORDERS, 1)).await.unwrap();
    let got = fetch_n(&*c, 1).await;
    let mut from_stream = letter(got[0].body.clone(), ORDERS);
    from_stream.entry_id = got[0].entry_id.clone();
    let dlq = from_stream.dlq.clone();
    t.dead_letter(from_stream.clone()).await.unwrap();
    c.ack(&ids(&got)).await.unwrap();
    let json = event(2).to_json();
    t.dead_letter(letter(WireBody::Json(json), "presence"))
        .await
        .unwrap();
    let pubsub_dlq = "presence.dlq";
    assert_eq!(activity(&t), 0, "nobody consumes a dead-letter stream");

    let listed = t.dead_letters(&dlq, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].letter, from_stream);

    let receipt = t.replay_dead_letter(&dlq, &listed[0].id).await.unwrap();
    assert_eq!(
        (receipt.channel.as_str(), receipt.event_id.as_str()),
        (ORDERS, "ev-1")
    );
    assert!(receipt.stream_id.is_some());
    assert!(t.dead_letters(&dlq, 10).await.unwrap().is_empty());
    let again = fetch_n(&*c, 1).await;
    assert_eq!((n_of(&again[0]), again[0].delivery_count), (1, 1));
    c.ack(&ids(&again)).await.unwrap();

    let mut sub = t
        .subscribe(subscription(Target::Channel("presence".into()), 4))
        .await
        .unwrap();
    let id = t.dead_letters(pubsub_dlq, 1).await.unwrap()[0].id.clone();
    let receipt = t.replay_dead_letter(pubsub_dlq, &id).await.unwrap();
    assert_eq!(
        (receipt.receivers, receipt.event_id.as_str()),
        (Some(1), "ev-2")
    );
    assert_eq!(n_of(&sub.next().await.unwrap()), 2);

    let missing = t.replay_dead_letter(pubsub_dlq, &id).await.unwrap_err();
    assert!(
        missing
            .to_string()
            .contains(&format!("no entry {id} in {pubsub_dlq}")),
        "{missing}"
    );
    drop(sub);
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn a_dead_letter_without_origin_is_kept_when_replay_fails() {
    let t = MemoryTransport::new();
    t.dead_letter(letter(WireBody::Json(Bytes::from_static(b"{}")), ""))
        .await
        .unwrap();
    let id = t.dead_letters(".dlq", 1).await.unwrap()[0].id.clone();
    assert!(t.replay_dead_letter(".dlq", &id).await.is_err());
    assert_eq!(t.stream_len(".dlq"), 1);
}
