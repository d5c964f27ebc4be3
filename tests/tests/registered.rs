//! `#[handler]` registration: start-up through inventory, state, graceful shutdown, calling one
//! handler directly, and the topology snapshot of this test binary. What happens when a
//! registered handler's state is missing is in `state.rs`, a binary of its own.
#![allow(missing_docs)] // test types

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{WAIT, wait_until};
use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "registered.orders.OrderCreated", max_len = 1000)]
pub struct OrderCreated {
    pub order_id: String,
    pub amount_cents: i64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "registered.payments.PaymentRequested")]
pub struct PaymentRequested {
    pub order_id: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, module = "registered.live")]
pub struct Heartbeat;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "registered.prices.Quote", reply = u64)]
pub struct Quote(pub String);

/// Application state handed to the handlers.
#[derive(Default)]
pub struct Ledger {
    charged: Mutex<Vec<String>>,
    beats: AtomicUsize,
}

#[handler(group = "billing", concurrency = 4, max_deliveries = 3, backoff_ms = 1)]
async fn charge(ev: OrderCreated, ctx: Context, ledger: State<Ledger>) -> Result<(), HandlerError> {
    if ev.amount_cents < 0 {
        return Err(HandlerError::permanent(format!(
            "negative amount {}",
            ev.amount_cents
        )));
    }
    ledger.charged.lock().unwrap().push(ev.order_id.clone());
    ctx.publish(&PaymentRequested {
        order_id: ev.order_id,
    })
    .await?;
    Ok(())
}

#[handler]
async fn audit(_ev: OrderCreated) {}

#[handler]
async fn beat(_ev: Heartbeat, ledger: State<Ledger>) -> Result<(), String> {
    ledger.beats.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[handler]
async fn quote(q: Quote) -> Result<u64, HandlerError> {
    Ok(q.0.len() as u64 * 100)
}

#[tokio::test]
async fn registered_handlers_run_with_state_and_stop_gracefully() {
    let bus = Bus::builder().state(Ledger::default()).build().unwrap();
    let started = bus.start_registered_handlers().await.unwrap();
    assert_eq!(started, 4);
    assert!(
        bus.start_registered_handlers().await.is_err(),
        "second start is refused"
    );

    bus.publish(&OrderCreated {
        order_id: "o-1".into(),
        amount_cents: 100,
    })
    .await
    .unwrap();
    bus.publish(&OrderCreated {
        order_id: "o-2".into(),
        amount_cents: -5,
    })
    .await
    .unwrap();
    bus.publish(&Heartbeat).await.unwrap();
    assert_eq!(bus.request(&Quote("abc".into())).await.unwrap(), 300);
    eventbus_core::testing::settle(&bus).await;

    let ledger = bus.state::<Ledger>().unwrap();
    assert_eq!(*ledger.charged.lock().unwrap(), vec!["o-1".to_string()]);
    assert_eq!(ledger.beats.load(Ordering::SeqCst), 1);
    assert_eq!(
        eventbus_core::testing::published::<PaymentRequested>(&bus).await,
        vec![PaymentRequested {
            order_id: "o-1".into()
        }]
    );
    let dead = eventbus_core::testing::dead_letters::<OrderCreated>(&bus)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "negative amount -5");
    assert!(
        dead[0].handler.ends_with("registered::charge"),
        "{}",
        dead[0].handler
    );

    let token = bus.shutdown_token();
    let runner = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.run_registered_handlers().await })
    };
    // The second start fails at once: the handlers already run.
    let second = runner.await.unwrap();
    assert!(second.is_err());
    token.cancel();
    bus.shutdown().await;
    assert!(bus.publish(&Heartbeat).await.is_err());
}

#[tokio::test]
async fn run_registered_handlers_returns_after_the_shutdown_token_is_cancelled() {
    let bus = Bus::builder().state(Ledger::default()).build().unwrap();
    // Published before any group exists: a new group starts at the beginning of the stream.
    bus.publish(&OrderCreated {
        order_id: "o-9".into(),
        amount_cents: 1,
    })
    .await
    .unwrap();
    let runner = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.run_registered_handlers().await })
    };
    let ledger = bus.state::<Ledger>().unwrap();
    wait_until("o-9 to be charged", WAIT, || {
        ledger.charged.lock().unwrap().len() == 1
    })
    .await;
    bus.shutdown_token().cancel();
    tokio::time::timeout(WAIT, runner)
        .await
        .expect("returns")
        .unwrap()
        .unwrap();
    assert!(
        bus.publish(&Heartbeat).await.is_err(),
        "the bus is shut down"
    );
}

#[tokio::test]
async fn a_registered_handler_can_be_called_directly() {
    let bus = Bus::builder().state(Ledger::default()).build().unwrap();
    eventbus_core::testing::call_handler(
        &bus,
        "charge",
        &OrderCreated {
            order_id: "o-7".into(),
            amount_cents: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        eventbus_core::testing::published::<PaymentRequested>(&bus).await,
        vec![PaymentRequested {
            order_id: "o-7".into()
        }]
    );
    let err = eventbus_core::testing::call_handler(
        &bus,
        "charge",
        &OrderCreated {
            order_id: "o-8".into(),
            amount_cents: -1,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("negative amount -1"), "{err}");
    assert_eq!(
        eventbus_core::testing::call_handler(&bus, "quote", &Quote("ab".into()))
            .await
            .unwrap(),
        200
    );
    assert!(
        eventbus_core::testing::call_handler(&bus, "missing", &Quote("ab".into()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_handler_function_can_be_called_with_a_test_context_and_state() {
    let bus = Bus::memory();
    let ledger = State::new(Ledger::default());
    let ev = OrderCreated {
        order_id: "o-3".into(),
        amount_cents: 3,
    };
    charge(
        ev.clone(),
        eventbus_core::testing::context(&bus, &ev),
        ledger.clone(),
    )
    .await
    .unwrap();
    assert_eq!(*ledger.charged.lock().unwrap(), ["o-3"]);
    assert_eq!(
        eventbus_core::testing::published::<PaymentRequested>(&bus)
            .await
            .len(),
        1
    );
}

#[test]
fn channel_names_come_from_attributes_and_type_paths() {
    assert_eq!(OrderCreated::CHANNEL, "registered.orders.OrderCreated");
    assert_eq!(OrderCreated::DESCRIPTOR.max_len, Some(1000));
    assert_eq!(Heartbeat::CHANNEL, "registered.live.Heartbeat");
    assert_eq!(Heartbeat::DESCRIPTOR.durability, Durability::Ephemeral);
    assert_eq!(Quote::DESCRIPTOR.reply, Some("u64"));
}

#[test]
fn topology_matches_the_checked_in_snapshot() {
    eventbus_core::testing::assert_topology_snapshot(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/snapshots/registered.topology"
    ));
}
