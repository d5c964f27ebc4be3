//! Failures beyond the rules of the conformance suite (`conformance.rs`): an instance that
//! crashes (its runtime stops) while handling, a group that vanishes, a server restart.

mod common;

use std::time::Duration;

use common::{
    PATIENCE, Recorder, RedisServer, builder, bus, namespace, plain, wait_until, wait_until_async,
};
use eventbus_core::prelude::*;
use eventbus_redis::RedisTransport;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.OrderCreated")]
struct OrderCreated {
    order_id: u32,
}

const FAST: HandlerOptions = HandlerOptions::new()
    .group("billing")
    .backoff(Duration::from_millis(10))
    .backoff_max(Duration::from_millis(20));

/// Starts, in a runtime of its own, an instance whose handler takes entries and never
/// finishes. Shutting that runtime down is a process crash:
/// no ack, no clean-up, the entry stays in its pending list.
async fn crashing_instance(url: &str, ns: &str, instance: &str) -> Doomed {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let taken = Recorder::default();
    let t = taken.clone();
    let (url, ns, instance) = (url.to_owned(), ns.to_owned(), instance.to_owned());
    runtime.spawn(async move {
        let b = builder(&url, &ns).await.instance(instance).build().unwrap();
        b.subscribe_with(
            move |o: OrderCreated| {
                let t = t.clone();
                async move {
                    t.push(o.order_id);
                    std::future::pending::<()>().await;
                }
            },
            FAST,
        )
        .await
        .unwrap();
        std::future::pending::<()>().await;
    });
    Doomed(Some(runtime), taken)
}

/// The runtime of an instance that is about to crash.
struct Doomed(Option<tokio::runtime::Runtime>, Recorder<u32>);

impl Doomed {
    /// Waits until its handler holds an entry.
    async fn wait_busy(&self) {
        assert!(
            wait_until(PATIENCE, || self.1.len() == 1).await,
            "the doomed instance got nothing"
        );
    }

    /// Stops every task of the instance at once, as a killed process would.
    fn crash(mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

async fn handler_bus(url: &str, ns: &str, instance: &str, rec: &Recorder<(u32, u32)>) -> Bus {
    let b = builder(url, ns).await.instance(instance).build().unwrap();
    let r = rec.clone();
    b.subscribe_with(
        move |o: OrderCreated, ctx: Context| {
            let r = r.clone();
            async move { r.push((o.order_id, ctx.attempt())) }
        },
        FAST,
    )
    .await
    .unwrap();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_stays_in_its_group_after_its_entries_were_claimed() {
    let server = RedisServer::start();
    let ns = namespace("claim");
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let publisher = Bus::builder()
        .transport(transport.clone())
        .namespace(&ns)
        .build()
        .unwrap();
    let doomed = crashing_instance(&server.url(), &ns, "worker-a").await;
    publisher
        .publish(&OrderCreated { order_id: 1 })
        .await
        .unwrap();
    doomed.wait_busy().await;
    let stream = publisher.channel_of::<OrderCreated>();
    assert!(
        wait_until_async(PATIENCE, async || {
            transport.pending_count(&stream, "billing").await.unwrap() == 1
        })
        .await
    );
    doomed.crash();

    let handled = Recorder::default();
    let _survivor = handler_bus(&server.url(), &ns, "worker-b", &handled).await;
    assert!(
        wait_until(PATIENCE, || handled.len() == 1).await,
        "the entry was never claimed"
    );
    // The second delivery of this entry: Redis counted the claim.
    assert_eq!(handled.items(), vec![(1, 2)]);
    assert!(
        wait_until_async(PATIENCE, async || {
            transport.pending_count(&stream, "billing").await.unwrap() == 0
        })
        .await
    );
    // The dead consumer owns nothing now; it leaves the group once it has been idle for longer
    // than a live consumer can be (see `gone_consumers_that_own_nothing_are_removed_...` in
    // identity.rs), not before.
    let consumers = transport.consumers(&stream, "billing").await.unwrap();
    if let Some(dead) = consumers.iter().find(|c| c.name == "worker-a") {
        assert_eq!(dead.pending, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_vanished_in_a_flushall_is_created_again() {
    let server = RedisServer::start();
    let ns = namespace("flushall");
    let handled = Recorder::default();
    let b = handler_bus(&server.url(), &ns, "worker", &handled).await;
    b.publish(&OrderCreated { order_id: 1 }).await.unwrap();
    assert!(wait_until(PATIENCE, || handled.len() == 1).await);

    let mut raw = plain(&server.url()).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();
    b.publish(&OrderCreated { order_id: 2 }).await.unwrap();
    b.publish(&OrderCreated { order_id: 3 }).await.unwrap();

    assert!(
        wait_until(PATIENCE, || handled.len() == 3).await,
        "{:?}",
        handled.items()
    );
    let ids: Vec<u32> = handled.items().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(b.stats().groups_recreated >= 1, "{:?}", b.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_resume_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let ns = namespace("restart-streams");
    let handled = Recorder::default();
    let consumer = handler_bus(&server.url(), &ns, "worker", &handled).await;
    let publisher = bus(&server.url(), &ns).await;
    publisher
        .publish(&OrderCreated { order_id: 1 })
        .await
        .unwrap();
    assert!(wait_until(PATIENCE, || handled.len() == 1).await);

    server.restart();

    // The first publishes may fail while the connection is re-established; every one that
    // succeeded must be handled.
    let mut accepted = vec![1];
    for order_id in 2..5 {
        let ok = wait_until_async(PATIENCE, async || {
            publisher.publish(&OrderCreated { order_id }).await.is_ok()
        })
        .await;
        assert!(ok, "publishing never succeeded again after the restart");
        accepted.push(order_id);
    }
    assert!(
        wait_until(PATIENCE, || handled.len() == accepted.len()).await,
        "handled {:?}, accepted {accepted:?}",
        handled.items()
    );
    let ids: Vec<u32> = handled.items().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, accepted);
    let stats = consumer.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(stats.groups_recreated >= 1, "{stats:?}");
}
