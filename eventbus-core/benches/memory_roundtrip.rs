//! S6 of the benchmark suite (eventbus-bench/README.md): the in-memory bus, publish -> handler round trip with the ~200-byte order
//! event, JSON both ways, on one core (current-thread runtime).
//!
//! `cargo bench -p eventbus-core --bench memory_roundtrip` prints events/s (criterion
//! throughput) and, first, the heap allocations per event counted by a counting allocator.
//! `S6_SINGLE_RUN=1` stops after that first counted run (for callgrind or perf).
#![allow(unsafe_code)] // the counting global allocator below
#![allow(missing_docs)] // bench types

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput};
use eventbus_core::prelude::*;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
    pub price_cents: u64,
}

/// The ~200-byte order of the benchmark suite.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub amount_cents: u64,
    pub currency: String,
    pub items: Vec<Item>,
    pub created_at: String,
}

/// The order as an ephemeral event (pub/sub); same JSON as the order itself.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(transparent)]
#[event(ephemeral, name = "bench.orders.OrderPlacedLive")]
pub struct OrderPlacedLive(pub Order);

/// The order as a durable event (stream log with a consumer group and acks).
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(transparent)]
#[event(name = "bench.orders.OrderPlaced")]
pub struct OrderPlaced(pub Order);

fn order(i: u64) -> Order {
    Order {
        order_id: format!("ord-{i:012}"),
        customer_id: "cus-0000004711".into(),
        amount_cents: 4999,
        currency: "EUR".into(),
        items: vec![
            Item {
                sku: "SKU-100234".into(),
                qty: 2,
                price_cents: 1299,
            },
            Item {
                sku: "SKU-200871".into(),
                qty: 1,
                price_cents: 2401,
            },
        ],
        created_at: "2026-11-24T12:00:00.000Z".into(),
    }
}

fn live(i: u64) -> OrderPlacedLive {
    OrderPlacedLive(order(i))
}

fn durable(i: u64) -> OrderPlaced {
    OrderPlaced(order(i))
}

const BATCH: u64 = 1_000;

async fn setup() -> (Bus, Arc<AtomicUsize>) {
    let bus = Bus::builder()
        .configure(|c| {
            c.record = Some(false);
            c.default_max_len = Some(10_000);
        })
        .build()
        .expect("valid config");
    let seen = Arc::new(AtomicUsize::new(0));
    count::<OrderPlacedLive>(&bus, &seen).await;
    count::<OrderPlaced>(&bus, &seen).await;
    (bus, seen)
}

/// Subscribes a handler that counts the events of type `E` it receives.
async fn count<E: Event<Reply = ()>>(bus: &Bus, seen: &Arc<AtomicUsize>) {
    let seen = seen.clone();
    bus.subscribe(move |ev: E| {
        let seen = seen.clone();
        async move {
            std::hint::black_box(&ev);
            seen.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await
    .expect("subscribe");
}

async fn round_trip<E: Event>(bus: &Bus, events: &[E]) {
    for ev in events {
        bus.publish(ev).await.expect("publish");
    }
    eventbus_core::testing::settle(bus).await;
}

fn allocations_per_event(rt: &tokio::runtime::Runtime) {
    let (bus, seen) = rt.block_on(setup());
    let live_events: Vec<_> = (0..BATCH).map(live).collect();
    let durable_events: Vec<_> = (0..BATCH).map(durable).collect();
    rt.block_on(round_trip(&bus, &live_events)); // warm up
    rt.block_on(round_trip(&bus, &durable_events));
    let size = serde_json::to_vec(&live_events[0]).expect("json").len();
    for (name, durable_run) in [("ephemeral", false), ("durable", true)] {
        let before_seen = seen.load(Ordering::Relaxed);
        let before = ALLOCS.load(Ordering::Relaxed);
        let start = Instant::now();
        rt.block_on(async {
            if durable_run {
                round_trip(&bus, &durable_events).await
            } else {
                round_trip(&bus, &live_events).await
            }
        });
        let elapsed = start.elapsed();
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        let handled = (seen.load(Ordering::Relaxed) - before_seen) as u64;
        assert_eq!(handled, BATCH, "every event handled");
        println!(
            "S6 {name}: payload {size} bytes, {:.1} allocations/event, {:.0} events/s (single run)",
            allocs as f64 / BATCH as f64,
            BATCH as f64 / elapsed.as_secs_f64()
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    allocations_per_event(&rt);
    if std::env::var_os("S6_SINGLE_RUN").is_some() {
        return; // for profilers: one counted run, no criterion
    }

    let mut c = Criterion::default().configure_from_args();
    let (bus, _seen) = rt.block_on(setup());
    let live_events: Vec<_> = (0..BATCH).map(live).collect();
    let durable_events: Vec<_> = (0..BATCH).map(durable).collect();
    let mut group = c.benchmark_group("S6_memory_round_trip");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("ephemeral", |b| {
        b.iter(|| rt.block_on(round_trip(&bus, &live_events)))
    });
    group.bench_function("durable", |b| {
        b.iter(|| rt.block_on(round_trip(&bus, &durable_events)))
    });
    group.finish();
    c.final_summary();
}
