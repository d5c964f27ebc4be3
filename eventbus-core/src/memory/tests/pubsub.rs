use std::sync::atomic::Ordering;

use super::*;
use crate::Error;
use crate::envelope::WireBody;

#[tokio::test]
async fn publish_fans_out_to_every_subscriber_and_counts_receivers() {
    let t = MemoryTransport::new();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            t.subscribe(subscription(Target::Channel("a.b".into()), 16))
                .await
                .unwrap(),
        );
    }
    let mut other = t
        .subscribe(subscription(Target::Channel("a.c".into()), 16))
        .await
        .unwrap();

    let receipt = t.publish(ephemeral("a.b", 1)).await.unwrap();
    // Three subscriptions of one connection: one receiver, as Redis counts them.
    assert_eq!(receipt.receivers, Some(1));
    assert_eq!(receipt.stream_id, None);
    assert_eq!(receipt.event_id, "ev-1");
    assert_eq!(receipt.channel, "a.b");

    for sub in &mut subs {
        let d = sub.next().await.unwrap();
        assert_eq!((d.channel.as_str(), n_of(&d)), ("a.b", 1));
        assert_eq!((d.entry_id, d.delivery_count), (None, 1));
        assert!(matches!(d.body, WireBody::Json(_)));
    }
    // `other` did not get message 1: the first thing it sees is message 2.
    assert_eq!(
        t.publish(ephemeral("a.c", 2)).await.unwrap().receivers,
        Some(1)
    );
    assert_eq!(n_of(&other.next().await.unwrap()), 2);
    assert_eq!(
        t.publish(ephemeral("nobody.listens", 3))
            .await
            .unwrap()
            .receivers,
        Some(0)
    );
}

#[tokio::test]
async fn pattern_subscription_receives_matching_channels_with_the_concrete_channel() {
    let t = MemoryTransport::new();
    let mut pattern = t
        .subscribe(subscription(
            Target::Pattern("tenant.*.presence".into()),
            16,
        ))
        .await
        .unwrap();
    let mut exact = t
        .subscribe(subscription(
            Target::Channel("tenant.a.presence".into()),
            16,
        ))
        .await
        .unwrap();

    assert_eq!(
        t.publish(ephemeral("tenant.a.presence", 1))
            .await
            .unwrap()
            .receivers,
        Some(2)
    );
    assert_eq!(
        t.publish(ephemeral("tenant.b.orders", 2))
            .await
            .unwrap()
            .receivers,
        Some(0)
    );
    assert_eq!(
        t.publish(ephemeral("tenant.b.presence", 3))
            .await
            .unwrap()
            .receivers,
        Some(1)
    );

    let first = pattern.next().await.unwrap();
    assert_eq!(
        (first.channel.as_str(), n_of(&first)),
        ("tenant.a.presence", 1)
    );
    let second = pattern.next().await.unwrap();
    assert_eq!(
        (second.channel.as_str(), n_of(&second)),
        ("tenant.b.presence", 3)
    );
    assert_eq!(n_of(&exact.next().await.unwrap()), 1);
    assert_eq!(t.pattern_count(), 1);
    assert_eq!(t.subscriber_count("tenant.a.presence"), 1);
}

#[tokio::test]
async fn a_slow_subscriber_loses_its_oldest_messages_and_counts_them() {
    let t = MemoryTransport::new();
    let spec = subscription(Target::Channel("ticks".into()), 2);
    let stats = spec.stats.clone();
    let mut sub = t.subscribe(spec).await.unwrap();

    for n in 1..=5 {
        assert_eq!(
            t.publish(ephemeral("ticks", n)).await.unwrap().receivers,
            Some(1)
        );
    }
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
    // Only the buffered messages count as outstanding work.
    assert_eq!(activity(&t), 2);
    assert_eq!(n_of(&sub.next().await.unwrap()), 4);
    assert_eq!(n_of(&sub.next().await.unwrap()), 5);
    assert_eq!(activity(&t), 0);
}

#[tokio::test]
async fn a_delivery_counts_as_activity_until_it_is_dropped() {
    let t = MemoryTransport::new();
    let mut sub = t
        .subscribe(subscription(Target::Channel("c".into()), 8))
        .await
        .unwrap();
    t.publish(ephemeral("c", 1)).await.unwrap();
    assert_eq!(activity(&t), 1);
    let d = sub.next().await.unwrap();
    assert_eq!(activity(&t), 1, "the handler still holds the delivery");
    drop(d);
    assert_eq!(activity(&t), 0);

    t.publish(ephemeral("c", 2)).await.unwrap();
    drop(sub);
    assert_eq!(
        activity(&t),
        0,
        "buffered messages of a dropped subscription are released"
    );
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let t = MemoryTransport::new();
    let a = t
        .subscribe(subscription(Target::Channel("x".into()), 4))
        .await
        .unwrap();
    let b = t
        .subscribe(subscription(Target::Channel("x".into()), 4))
        .await
        .unwrap();
    let p1 = t
        .subscribe(subscription(Target::Pattern("x*".into()), 4))
        .await
        .unwrap();
    let p2 = t
        .subscribe(subscription(Target::Pattern("x*".into()), 4))
        .await
        .unwrap();
    assert_eq!((t.subscriber_count("x"), t.pattern_count()), (2, 1));
    assert_eq!(t.channels(), vec!["x".to_owned()]);

    drop((a, p1));
    assert_eq!((t.subscriber_count("x"), t.pattern_count()), (1, 1));
    // The connection through its channel and through its pattern.
    assert_eq!(
        t.publish(ephemeral("x", 1)).await.unwrap().receivers,
        Some(2)
    );

    drop((b, p2));
    assert_eq!((t.subscriber_count("x"), t.pattern_count()), (0, 0));
    assert!(t.channels().is_empty());
    assert_eq!(
        t.publish(ephemeral("x", 2)).await.unwrap().receivers,
        Some(0)
    );
}

#[tokio::test]
async fn close_ends_the_subscriptions_of_that_handle_only() {
    let redis = MemoryTransport::new();
    let (a, b) = (redis.clone(), redis.clone());
    let mut sub_a = a
        .subscribe(subscription(Target::Channel("c".into()), 8))
        .await
        .unwrap();
    let mut sub_b = b
        .subscribe(subscription(Target::Channel("c".into()), 8))
        .await
        .unwrap();
    assert_eq!(
        redis.publish(ephemeral("c", 1)).await.unwrap().receivers,
        Some(2)
    );

    a.close().await;
    // What was buffered is still handed out, then the subscription ends.
    assert_eq!(n_of(&sub_a.next().await.unwrap()), 1);
    assert!(sub_a.next().await.is_none());
    assert!(matches!(
        a.publish(ephemeral("c", 2)).await,
        Err(Error::Closed)
    ));
    let late = a
        .subscribe(subscription(Target::Channel("c".into()), 8))
        .await;
    assert!(matches!(late, Err(Error::Closed)));

    assert_eq!(
        b.publish(ephemeral("c", 3)).await.unwrap().receivers,
        Some(1)
    );
    assert_eq!(n_of(&sub_b.next().await.unwrap()), 1);
    assert_eq!(n_of(&sub_b.next().await.unwrap()), 3);
}

#[tokio::test]
async fn next_waits_for_a_message() {
    let t = MemoryTransport::new();
    let mut sub = t
        .subscribe(subscription(Target::Channel("c".into()), 8))
        .await
        .unwrap();
    let reader = tokio::spawn(async move { sub.next().await.map(|d| n_of(&d)) });
    tokio::task::yield_now().await;
    t.publish(ephemeral("c", 7)).await.unwrap();
    assert_eq!(reader.await.unwrap(), Some(7));
}
