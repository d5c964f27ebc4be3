//! Every accepted handler shape registers, with its options and the state it needs, and runs
//! on the memory bus.
use eventbus_core::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct OrderCreated {
    order_id: String,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(reply = Pong)]
struct Ping {
    n: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Pong {
    n: u32,
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Db {
    calls: AtomicUsize,
}

struct Config {
    name: &'static str,
}

#[handler]
async fn event_only(_ev: OrderCreated) {
    CALLS.fetch_add(1, Ordering::SeqCst);
}

#[handler(
    group = "billing",
    concurrency = 8,
    max_deliveries = 3,
    backoff_ms = 50,
    backoff_max_ms = 2000
)]
async fn with_context(ev: OrderCreated, ctx: Context) -> Result<(), HandlerError> {
    assert_eq!(ctx.channel(), OrderCreated::CHANNEL);
    assert!(!ev.order_id.is_empty());
    CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[handler(broadcast)]
async fn returns_unit(OrderCreated { order_id }: OrderCreated, _: Context) -> () {
    assert!(!order_id.is_empty());
    CALLS.fetch_add(1, Ordering::SeqCst);
}

#[handler]
pub(crate) async fn string_error(_ev: OrderCreated) -> Result<(), String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

type Outcome = Result<(), HandlerError>;

#[handler]
async fn alias_result(_ev: OrderCreated) -> Outcome {
    CALLS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[handler]
async fn answer(ping: Ping) -> Result<Pong, HandlerError> {
    Ok(Pong { n: ping.n + 1 })
}

#[handler]
async fn with_state(_ev: OrderCreated, db: State<Db>) {
    db.calls.fetch_add(1, Ordering::SeqCst);
}

#[handler]
async fn with_context_and_state(
    _ev: OrderCreated,
    ctx: Context,
    db: State<Db>,
) -> Result<(), HandlerError> {
    assert_eq!(ctx.attempt(), 1);
    db.calls.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[handler]
async fn two_states_then_context(
    _ev: OrderCreated,
    db: State<Db>,
    config: State<Config>,
    _ctx: Context,
) {
    assert_eq!(config.name, "signatures");
    db.calls.fetch_add(1, Ordering::SeqCst);
}

#[handler]
async fn answer_with_state(ping: Ping, config: State<Config>) -> Result<Pong, HandlerError> {
    Ok(Pong {
        n: ping.n + config.name.len() as u32,
    })
}

mod nested {
    use eventbus_core::prelude::*;

    #[handler]
    async fn r#match(_ev: super::OrderCreated) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn registration(name: &str) -> &'static eventbus_core::HandlerRegistration {
    let path = format!("{}::{name}", module_path!());
    eventbus_core::handler::registered_handlers()
        .into_iter()
        .find(|h| h.name == path)
        .unwrap_or_else(|| panic!("{path} is not registered"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let d = registration("event_only");
    assert_eq!(d.event, OrderCreated::DESCRIPTOR);
    assert_eq!(d.options, HandlerOptions::DEFAULT);

    let o = registration("with_context").options;
    assert_eq!(o.group, Some("billing"));
    assert_eq!(o.concurrency, 8);
    assert_eq!(o.max_deliveries, 3);
    assert_eq!(o.backoff, std::time::Duration::from_millis(50));
    assert_eq!(o.backoff_max, std::time::Duration::from_secs(2));

    assert_eq!(
        registration("returns_unit").options,
        HandlerOptions::DEFAULT.broadcast()
    );
    assert_eq!(registration("answer").event, Ping::DESCRIPTOR);
    registration("nested::match");
    registration("string_error");
    registration("alias_result");

    let needs = |name: &str| -> Vec<&'static str> {
        (registration(name).required_state)()
            .iter()
            .map(|r| r.type_name)
            .collect()
    };
    assert!(needs("with_context").is_empty());
    assert_eq!(needs("with_state"), [std::any::type_name::<Db>()]);
    assert_eq!(needs("with_context_and_state"), [std::any::type_name::<Db>()]);
    assert_eq!(
        needs("two_states_then_context"),
        [std::any::type_name::<Db>(), std::any::type_name::<Config>()]
    );

    let bus = Bus::builder()
        .state(Db::default())
        .state(Config { name: "signatures" })
        .build()
        .unwrap();
    let pong = eventbus_core::testing::call_handler(&bus, "answer", &Ping { n: 41 })
        .await
        .unwrap();
    assert_eq!(pong, Pong { n: 42 });
    let pong = eventbus_core::testing::call_handler(&bus, "answer_with_state", &Ping { n: 1 })
        .await
        .unwrap();
    assert_eq!(pong, Pong { n: 11 });
    let ev = OrderCreated {
        order_id: "o-1".into(),
    };
    for name in [
        "event_only",
        "with_context",
        "returns_unit",
        "string_error",
        "alias_result",
    ] {
        eventbus_core::testing::call_handler(&bus, name, &ev).await.unwrap();
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 5);
    for name in [
        "with_state",
        "with_context_and_state",
        "two_states_then_context",
    ] {
        eventbus_core::testing::call_handler(&bus, name, &ev)
            .await
            .unwrap();
    }
    assert_eq!(bus.state::<Db>().unwrap().calls.load(Ordering::SeqCst), 3);
}

#[allow(non_camel_case_types)]
mod names_that_could_clash {
    use eventbus_core::prelude::*;

    #[derive(Event, Serialize, Deserialize)]
    pub struct ev {}

    // A handler may be called like the generated code's own bindings.
    #[handler]
    async fn ev(_ev: ev, ctx: Context) {
        let _ = ctx;
    }

    #[handler]
    async fn ctx(_e: ev) {}
}
