//! Consumer names and stops on the in-memory transport, with the semantics of the Redis one
//! (`eventbus-redis/tests/identity.rs` and `shutdown.rs`): buses of one instance name that live
//! at the same time get different consumer names, a restarted instance is the same consumer
//! and handles what it left pending first, and a stop neither waits for an idle read nor
//! leaves what a read brought unhandled.
#![allow(missing_docs)] // test types

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{WAIT, wait_until};
use eventbus_core::prelude::*;
use eventbus_core::{MemoryTransport, Transport};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "test.identity.Job")]
pub struct Job {
    pub n: u32,
}

type Calls = Arc<Mutex<Vec<u32>>>;

async fn instance(shared: &MemoryTransport, name: &str, calls: &Calls) -> Bus {
    let bus = Bus::builder()
        .transport(shared.clone())
        .instance(name)
        .configure(|c| c.claim_idle = Duration::from_secs(60))
        .build()
        .unwrap();
    let calls = calls.clone();
    bus.subscribe_with(
        move |job: Job| {
            let calls = calls.clone();
            async move { calls.lock().unwrap().push(job.n) }
        },
        HandlerOptions::new().group("g"),
    )
    .await
    .unwrap();
    bus
}

#[tokio::test]
async fn live_buses_of_one_instance_name_get_different_consumer_names() {
    let shared = MemoryTransport::new();
    let calls = Calls::default();
    let a = instance(&shared, "svc", &calls).await;
    let b = instance(&shared, "svc", &calls).await;
    assert_eq!(
        (a.consumer_name(), b.consumer_name()),
        (Some("svc"), Some("svc-2"))
    );
    a.shutdown().await;
    // The name is free again once its holder stopped.
    let c = instance(&shared, "svc", &calls).await;
    assert_eq!(c.consumer_name(), Some("svc"));
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn the_default_instance_name_is_the_same_for_every_bus_of_a_program() {
    let shared = MemoryTransport::new();
    let calls = Calls::default();
    let bus = Bus::builder().transport(shared).build().unwrap();
    assert_eq!(
        bus.config().instance,
        eventbus_core::identity::default_instance()
    );
    let c = calls.clone();
    bus.subscribe(move |job: Job| {
        let c = c.clone();
        async move { c.lock().unwrap().push(job.n) }
    })
    .await
    .unwrap();
    assert_eq!(
        bus.consumer_name(),
        Some(eventbus_core::identity::default_instance().as_str())
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn a_crashed_instance_restarted_under_its_name_handles_its_pending_entries_first() {
    let shared = MemoryTransport::new();
    let publisher = Bus::builder().transport(shared.clone()).build().unwrap();
    for n in 1..=5 {
        publisher.publish(&Job { n }).await.unwrap();
    }
    let stream = publisher.channel_of::<Job>();
    // The instance that dies reads two entries and never acks them.
    let doomed_handle: Arc<dyn Transport> = Arc::new(shared.clone());
    let doomed = Bus::builder()
        .transport_arc(doomed_handle.clone())
        .instance("worker")
        .build()
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    doomed
        .subscribe_with(
            move |_job: Job| {
                let g = g.clone();
                async move {
                    let _never = g.acquire().await;
                }
            },
            HandlerOptions::new().group("g").concurrency(2),
        )
        .await
        .unwrap();
    wait_until("two entries pending", WAIT, || {
        shared.pending(&stream, "g").len() == 2
    })
    .await;
    doomed_handle.close().await; // the crash: its connection is gone, nothing acked

    let calls = Calls::default();
    let began = Instant::now();
    let restarted = instance(&shared, "worker", &calls).await;
    assert_eq!(restarted.consumer_name(), Some("worker"));
    wait_until("all five handled", WAIT, || {
        calls.lock().unwrap().len() == 5
    })
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(*calls.lock().unwrap(), [1, 2, 3, 4, 5]);
    restarted.shutdown().await;
    gate.close();
}

#[tokio::test]
async fn a_stop_does_not_wait_for_an_idle_read_and_leaves_nothing_pending() {
    let shared = MemoryTransport::new();
    let calls = Calls::default();
    for round in 1..=3u32 {
        let bus = instance(&shared, "worker", &calls).await;
        bus.publish(&Job { n: round }).await.unwrap();
        eventbus_core::testing::settle(&bus).await;
        // Now the consumer waits in a read on an empty stream (up to a second).
        let began = Instant::now();
        bus.shutdown().await;
        let stop = began.elapsed();
        assert!(
            stop < Duration::from_millis(500),
            "round {round}: stop took {stop:?}"
        );
        assert!(shared.pending(&bus.channel_of::<Job>(), "g").is_empty());
    }
    assert_eq!(*calls.lock().unwrap(), [1, 2, 3]);
}
