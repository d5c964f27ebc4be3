//! Quickstart: two durable events, one ephemeral templated event, three registered handlers.
//!
//! ```text
//! cargo run -p eventbus-examples --example quickstart                 # in-memory bus
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p eventbus-examples --example quickstart
//! ```
//!
//! It publishes three orders and one activity event, then prints what each handler received.
//! The billing handler publishes a follow-up `PaymentRequested` that carries the order's
//! correlation id; the order of 0 cents fails permanently and lands in the dead-letter stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventbus::prelude::*;
use tokio::sync::Notify;

/// A fact other services act on: durable (a Redis Stream), with a stable name.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.orders.OrderCreated", max_len = 10000)]
pub struct OrderCreated {
    order_id: String,
    amount_cents: u64,
}

/// Published by the billing handler in reaction to an order.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.payments.PaymentRequested")]
pub struct PaymentRequested {
    order_id: String,
    amount_cents: u64,
}

/// Live activity per tenant: ephemeral (pub/sub), one channel per tenant.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, channel = "shop.tenant.{tenant}.activity")]
pub struct ActivitySeen {
    tenant: String,
    what: String,
}

/// Application state shared with the handlers (each takes it as a `State<Progress>` argument):
/// counts what was handled.
#[derive(Default)]
struct Progress {
    done: AtomicUsize,
    changed: Notify,
}

impl Progress {
    fn tick(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn wait_for(&self, n: usize) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.done.load(Ordering::SeqCst) >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_ok()
    }
}

#[handler(group = "billing", max_deliveries = 3, backoff_ms = 20)]
async fn charge(
    ev: OrderCreated,
    ctx: Context,
    progress: State<Progress>,
) -> Result<(), HandlerError> {
    println!(
        "[billing]  received {} for {} cents (attempt {})",
        ev.order_id,
        ev.amount_cents,
        ctx.attempt()
    );
    if ev.amount_cents == 0 {
        progress.tick();
        return Err(HandlerError::permanent(
            "an order of 0 cents cannot be charged",
        ));
    }
    ctx.publish(&PaymentRequested {
        order_id: ev.order_id,
        amount_cents: ev.amount_cents,
    })
    .await?;
    progress.tick();
    Ok(())
}

#[handler(group = "payments")]
async fn pay(ev: PaymentRequested, ctx: Context, progress: State<Progress>) {
    println!(
        "[payments] received payment request for {} (correlation {})",
        ev.order_id,
        ctx.correlation_id()
    );
    progress.tick();
}

#[handler]
async fn activity(ev: ActivitySeen, ctx: Context, progress: State<Progress>) {
    println!("[activity] {} on channel {}", ev.what, ctx.channel());
    progress.tick();
}

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let bus = eventbus::builder_from_env()
        .await?
        .source("quickstart")
        .state(Progress::default())
        .build()?;
    println!("bus: {:?}", bus);
    bus.start_registered_handlers().await?;

    let orders = [("o-1", 4999), ("o-2", 1250), ("o-3", 0)];
    for (id, cents) in orders {
        let receipt = bus
            .publish(&OrderCreated {
                order_id: id.into(),
                amount_cents: cents,
            })
            .await?;
        println!(
            "published OrderCreated {id} on {} (entry {})",
            receipt.channel,
            receipt.stream_id.as_deref().unwrap_or("-")
        );
    }
    let receipt = bus
        .publish(&ActivitySeen {
            tenant: "acme".into(),
            what: "checkout page viewed".into(),
        })
        .await?;
    println!(
        "published ActivitySeen on {} ({} receivers)",
        receipt.channel,
        receipt.receivers.unwrap_or(0)
    );

    // 3 orders + 2 payment requests + 1 activity.
    let progress = bus.state::<Progress>()?;
    if !progress.wait_for(6).await {
        eprintln!("timed out waiting for the handlers");
    }
    eventbus::testing::settle(&bus).await;
    let dead = eventbus::testing::dead_letters::<OrderCreated>(&bus).await?;
    for letter in dead.iter().rev().take(1) {
        println!(
            "dead letter {}: {} ({} deliveries)",
            letter.id, letter.reason, letter.deliveries
        );
    }
    let stats = bus.stats();
    println!(
        "stats: published {}, handled {}, failed {}, dead-lettered {}",
        stats.published, stats.handled, stats.failed, stats.dead_lettered
    );
    bus.shutdown().await;
    Ok(())
}
