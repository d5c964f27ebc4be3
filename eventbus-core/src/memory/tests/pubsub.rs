use std::sync::atomic::Ordering;

use super::*;
use crate::Error;

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
