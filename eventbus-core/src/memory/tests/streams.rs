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
async fn max_len_trims_the_stream_and_releases_unread_entries() {
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
async fn a_dead_letter_without_origin_is_kept_when_replay_fails() {
    let t = MemoryTransport::new();
    t.dead_letter(letter(WireBody::Json(Bytes::from_static(b"{}")), ""))
        .await
        .unwrap();
    let id = t.dead_letters(".dlq", 1).await.unwrap()[0].id.clone();
    let err = t.replay_dead_letter(".dlq", &id).await.unwrap_err();
    assert!(
        matches!(err, crate::Error::InvalidDeadLetter { .. }),
        "{err}"
    );
    assert_eq!(t.stream_len(".dlq"), 1);
}

/// The lease of an entry kept in flight without an ack ends after ten `claim_idle` periods (as
/// on Redis, where renewals stop then): another consumer claims it `claim_idle` later.
#[tokio::test(start_paused = true)]
async fn an_entry_kept_in_flight_without_an_ack_is_claimed_once_its_lease_ended() {
    let t = MemoryTransport::new();
    let mut spec = group(ORDERS, "billing", "keeper");
    spec.claim_idle = Duration::from_millis(100);
    let keeper = t.consume(spec.clone()).await.unwrap();
    t.publish(durable(ORDERS, 1)).await.unwrap();
    let kept = fetch_n(&*keeper, 1).await;
    let start = tokio::time::Instant::now();
    spec.consumer = "other".into();
    let other = t.consume(spec).await.unwrap();
    let claimed = fetch_n(&*other, 1).await;
    assert!(
        start.elapsed() >= Duration::from_millis(1100),
        "claimed after {:?}, before the lease ended",
        start.elapsed()
    );
    assert_eq!(claimed[0].entry_id, kept[0].entry_id);
    assert_eq!(claimed[0].delivery_count, 2);
    assert_eq!(t.pending(ORDERS, "billing")[0].consumer, "other");
    drop(keeper);
}

/// Closing a connection ends the leases of its consumers: their entries are claimable
/// `claim_idle` later, as if the process had died.
#[tokio::test(start_paused = true)]
async fn closing_a_connection_ends_the_leases_of_its_consumers() {
    let store = MemoryTransport::new();
    let closing = store.clone();
    let mut spec = group(ORDERS, "billing", "closing");
    spec.claim_idle = Duration::from_millis(100);
    let holder = closing.consume(spec.clone()).await.unwrap();
    store.publish(durable(ORDERS, 1)).await.unwrap();
    let held = fetch_n(&*holder, 1).await;
    closing.close().await;
    let start = tokio::time::Instant::now();
    spec.consumer = "other".into();
    let other = store.consume(spec).await.unwrap();
    let claimed = fetch_n(&*other, 1).await;
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "claimed only after {:?}: the lease outlived its connection",
        start.elapsed()
    );
    assert_eq!(claimed[0].entry_id, held[0].entry_id);
    drop(holder);
}
