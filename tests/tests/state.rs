//! `State<T>` handler arguments: a handler gets the bus's state, and a handler whose state is
//! missing does not start, for `subscribe` and for registered handlers, so that no event is
//! ever retried or dead-lettered for it. A binary of its own: its registered handlers need
//! state that the other test binaries do not give.
#![allow(missing_docs)] // test types

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eventbus_core::prelude::*;
use eventbus_core::{Error, testing};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "state.orders.OrderCreated")]
pub struct OrderCreated {
    pub order_id: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "state.audit.Audited")]
pub struct Audited {
    pub order_id: String,
}

#[derive(Default)]
pub struct Counters {
    charged: AtomicUsize,
}

pub struct Config {
    currency: &'static str,
}

static AUDITED: AtomicUsize = AtomicUsize::new(0);

// Sorted before `charge` (by channel): if handlers started one by one, it would run before the
// missing state of `charge` were noticed.
#[handler(group = "audit")]
async fn audit(_ev: Audited) {
    AUDITED.fetch_add(1, Ordering::SeqCst);
}

#[handler(group = "billing")]
async fn charge(
    ev: OrderCreated,
    ctx: Context,
    counters: State<Counters>,
    config: State<Config>,
) -> Result<(), HandlerError> {
    assert_eq!(config.currency, "EUR");
    counters.charged.fetch_add(1, Ordering::SeqCst);
    ctx.publish(&Audited {
        order_id: ev.order_id,
    })
    .await?;
    Ok(())
}

async fn count(_ev: OrderCreated, counters: State<Counters>) {
    counters.charged.fetch_add(1, Ordering::SeqCst);
}

fn order(id: &str) -> OrderCreated {
    OrderCreated {
        order_id: id.into(),
    }
}

fn with_state() -> Bus {
    Bus::builder()
        .state(Counters::default())
        .state(Config { currency: "EUR" })
        .build()
        .unwrap()
}

/// The handler and type named by a `MissingState` error.
fn missing(err: Error) -> (Option<String>, &'static str, Option<&'static str>) {
    match err {
        Error::MissingState {
            handler,
            type_name,
            given_instead,
        } => (handler, type_name, given_instead),
        other => panic!("expected Error::MissingState, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscribed_handler_gets_the_state_of_the_bus() {
    let bus = with_state();
    bus.subscribe(count).await.unwrap();
    bus.subscribe(
        |_ev: OrderCreated, ctx: Context, counters: State<Counters>| async move {
            assert_eq!(ctx.attempt(), 1);
            counters.charged.fetch_add(10, Ordering::SeqCst);
        },
    )
    .await
    .unwrap();
    bus.publish(&order("o-1")).await.unwrap();
    testing::settle(&bus).await;
    let counters = bus.state::<Counters>().unwrap();
    assert_eq!(counters.charged.load(Ordering::SeqCst), 11);
    assert_eq!(bus.stats().failed, 0);
}

#[tokio::test]
async fn subscribe_refuses_a_handler_whose_state_is_missing_and_nothing_is_dead_lettered() {
    let bus = Bus::memory();
    let err = bus.subscribe(count).await.unwrap_err();
    let text = err.to_string();
    let (handler, type_name, given_instead) = missing(err);
    let handler = handler.expect("the handler is named");
    assert!(handler.ends_with("::count"), "{handler}");
    assert_eq!(type_name, std::any::type_name::<Counters>());
    assert_eq!(given_instead, None);
    assert!(
        text.contains("takes State<state::Counters>") && text.contains("Bus::builder().state"),
        "{text}"
    );

    // No consumer was started: the event waits in its stream, unhandled and not dead-lettered.
    bus.publish(&order("o-2")).await.unwrap();
    testing::settle(&bus).await;
    assert_eq!(bus.stats().delivered, 0);
    assert!(
        testing::dead_letters::<OrderCreated>(&bus)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_arc_of_the_state_is_not_the_state_and_the_error_says_so() {
    let bus = Bus::builder()
        .state(Arc::new(Counters::default()))
        .build()
        .unwrap();
    let err = bus.subscribe(count).await.unwrap_err();
    let text = err.to_string();
    let (_, type_name, given_instead) = missing(err);
    assert_eq!(type_name, "state::Counters");
    assert_eq!(given_instead, Some("alloc::sync::Arc<state::Counters>"));
    assert!(
        text.contains("holds alloc::sync::Arc<state::Counters> instead: give the value itself"),
        "{text}"
    );
}

#[tokio::test]
async fn registered_handlers_do_not_start_when_one_lacks_its_state() {
    let bus = Bus::builder().state(Counters::default()).build().unwrap();
    let err = bus.start_registered_handlers().await.unwrap_err();
    let (handler, type_name, _) = missing(err);
    assert_eq!(handler.as_deref(), Some("state::charge"));
    assert_eq!(type_name, "state::Config");
    // `run_registered_handlers` returns the same error at once instead of running.
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        bus.run_registered_handlers(),
    )
    .await
    .expect("returns at once")
    .unwrap_err();
    assert_eq!(missing(err).1, "state::Config");

    // `audit` needs no state, and did not start either.
    bus.publish(&Audited {
        order_id: "o-3".into(),
    })
    .await
    .unwrap();
    testing::settle(&bus).await;
    assert_eq!(AUDITED.load(Ordering::SeqCst), 0);
    assert_eq!(bus.stats().delivered, 0);

    // Nothing was marked as started: a bus with the state starts them all.
    let bus = with_state();
    assert_eq!(bus.start_registered_handlers().await.unwrap(), 2);
    bus.publish(&order("o-4")).await.unwrap();
    testing::settle(&bus).await;
    let counters = bus.state::<Counters>().unwrap();
    assert_eq!(counters.charged.load(Ordering::SeqCst), 1);
    assert_eq!(AUDITED.load(Ordering::SeqCst), 1);
    bus.shutdown().await;
}

#[tokio::test]
async fn a_registered_handler_called_directly_without_its_state_fails_with_the_same_explanation() {
    let err = testing::call_handler(&Bus::memory(), "charge", &order("o-5"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("handler state::charge takes State<state::Counters>"),
        "{text}"
    );
}
