//! Order processing on a durable stream, with a dead-letter case and its replay.
//!
//! ```text
//! cargo run -p eventbus-examples --example order_processing
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p eventbus-examples --example order_processing
//! ```
//!
//! Two consumer groups read the `shop.orders.OrderPlaced` stream: `inventory` reserves stock,
//! `billing` charges the card. The card of order `o-3` is declined three times in a row, so the
//! billing handler gives up and the entry lands in `shop.orders.OrderPlaced.dlq` with the reason,
//! while `inventory` handled it normally. After the card is fixed, the dead letter is replayed
//! and the order is charged. Both handlers are `dedup`: the replayed entry reaches both groups
//! again, and `inventory`, which handled it already, skips it instead of reserving twice.
//! On Redis, run it twice: every run uses a fresh namespace.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventbus::prelude::*;

/// An order was placed: durable, at least once, to every group.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.orders.OrderPlaced", max_len = 100000, version = 2)]
struct OrderPlaced {
    order_id: String,
    amount_cents: u64,
    card: String,
}

#[derive(Default)]
struct Shop {
    reserved: Mutex<BTreeSet<String>>,
    charged: Mutex<BTreeSet<String>>,
    card_fixed: AtomicBool,
}

#[handler(group = "inventory", dedup)]
async fn reserve_stock(order: OrderPlaced, shop: State<Shop>) {
    println!("[inventory] reserved stock for {}", order.order_id);
    shop.reserved.lock().unwrap().insert(order.order_id);
}

#[handler(group = "billing", dedup, max_deliveries = 3, backoff_ms = 50)]
async fn charge_card(
    order: OrderPlaced,
    ctx: Context,
    shop: State<Shop>,
) -> Result<(), HandlerError> {
    if order.card == "4000-0000-0000-0002" && !shop.card_fixed.load(Ordering::SeqCst) {
        println!(
            "[billing]   card declined for {} (attempt {} of 3)",
            order.order_id,
            ctx.attempt()
        );
        return Err(HandlerError::new("card declined by issuer"));
    }
    println!(
        "[billing]   charged {} cents for {} (attempt {})",
        order.amount_cents,
        order.order_id,
        ctx.attempt()
    );
    shop.charged.lock().unwrap().insert(order.order_id);
    Ok(())
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            eprintln!("timed out waiting for {what}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let bus = eventbus::builder_from_env()
        .await?
        .namespace(format!("example-{run}"))
        .source("order-service")
        .state(Shop::default())
        .build()?;
    bus.start_registered_handlers().await?;

    let orders = [
        ("o-1", 4999, "4242-4242-4242-4242"),
        ("o-2", 1250, "5555-5555-5555-4444"),
        ("o-3", 8900, "4000-0000-0000-0002"),
    ];
    for (id, cents, card) in orders {
        let receipt = bus
            .publish(&OrderPlaced {
                order_id: id.into(),
                amount_cents: cents,
                card: card.into(),
            })
            .await?;
        println!(
            "published {id} as entry {} of stream {}",
            receipt.stream_id.as_deref().unwrap_or("?"),
            receipt.channel
        );
    }

    let shop = bus.state::<Shop>()?;
    let dlq = bus.dead_letter_key_of::<OrderPlaced>();
    wait_until("the dead letter", || {
        shop.reserved.lock().unwrap().len() == 3 && bus.stats().dead_lettered == 1
    })
    .await;
    let letters = bus.transport().dead_letters(&dlq, 10).await?;
    for entry in &letters {
        println!(
            "dead letter {} in {dlq}: group {}, {} deliveries, reason: {}",
            entry.id, entry.letter.group, entry.letter.deliveries, entry.letter.reason
        );
    }

    // A replay appends the entry to the stream again, so every group sees it once more; the
    // event keeps its id, so `inventory` (dedup) knows it handled it and skips it.
    println!("the customer updated the card; replaying the dead letter");
    shop.card_fixed.store(true, Ordering::SeqCst);
    for entry in letters {
        bus.transport().replay_dead_letter(&dlq, &entry.id).await?;
    }
    wait_until("o-3 to be charged and skipped by inventory", || {
        shop.charged.lock().unwrap().contains("o-3") && bus.stats().duplicates_skipped == 1
    })
    .await;
    println!(
        "redeliveries skipped by dedup handlers: {}",
        bus.stats().duplicates_skipped
    );

    println!(
        "reserved: {:?}\ncharged:  {:?}",
        shop.reserved.lock().unwrap(),
        shop.charged.lock().unwrap()
    );
    bus.shutdown().await;
    Ok(())
}
