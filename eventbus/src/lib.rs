//! # eventbus
//!
//! One dependency for typed events over Redis: re-exports [`eventbus_core`] (events, handlers,
//! the bus, the in-memory transport) and, with the default `redis` feature, `eventbus-redis` as
//! [`redis`].
//!
//! ```no_run
//! use eventbus::prelude::*;
//!
//! #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
//! #[event(name = "shop.orders.OrderCreated")]
//! pub struct OrderCreated { pub order_id: String, pub amount_cents: u64 }
//!
//! #[handler(group = "billing")]
//! async fn charge(ev: OrderCreated) -> Result<(), HandlerError> {
//!     println!("charging {}", ev.order_id);
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> eventbus::Result<()> {
//!     let bus = eventbus::from_env().await?; // REDIS_URL set: Redis; otherwise in-memory
//!     bus.publish(&OrderCreated { order_id: "o-1".into(), amount_cents: 4999 }).await?;
//!     bus.run_registered_handlers().await // until Ctrl-C
//! }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use eventbus_core::*;

#[cfg(feature = "redis")]
pub use eventbus_redis as redis;

/// The environment variable naming the Redis server: `redis://[user:password@]host:port[/db]`.
pub const REDIS_URL_ENV: &str = "REDIS_URL";
/// The environment variable giving the bus namespace (key prefix), optional.
pub const NAMESPACE_ENV: &str = "EVENTBUS_NAMESPACE";

/// Builds a bus from the environment: Redis when `REDIS_URL` is set, the in-memory bus
/// otherwise. `EVENTBUS_NAMESPACE`, when set, prefixes every key.
///
/// ```no_run
/// # async fn demo() -> eventbus::Result<()> {
/// let bus = eventbus::from_env().await?;
/// # Ok(()) }
/// ```
pub async fn from_env() -> Result<Bus> {
    builder_from_env().await?.build()
}

/// A builder with the transport chosen from the environment (as [`from_env`]), to add state or
/// settings before building.
///
/// ```no_run
/// # async fn demo() -> eventbus::Result<()> {
/// struct Db;
/// let bus = eventbus::builder_from_env().await?.state(Db).build()?;
/// # Ok(()) }
/// ```
pub async fn builder_from_env() -> Result<BusBuilder> {
    let mut builder = Bus::builder();
    if let Some(ns) = std::env::var(NAMESPACE_ENV).ok().filter(|s| !s.is_empty()) {
        builder = builder.namespace(ns);
    }
    match std::env::var(REDIS_URL_ENV).ok().filter(|s| !s.is_empty()) {
        None => Ok(builder),
        Some(url) => connect(builder, &url).await,
    }
}

#[cfg(feature = "redis")]
async fn connect(builder: BusBuilder, url: &str) -> Result<BusBuilder> {
    let transport = eventbus_redis::RedisTransport::connect(url).await?;
    Ok(builder.transport(transport))
}

#[cfg(not(feature = "redis"))]
async fn connect(_builder: BusBuilder, _url: &str) -> Result<BusBuilder> {
    Err(Error::Config(
        "REDIS_URL is set but eventbus was built without its `redis` feature".to_owned(),
    ))
}

/// What most users need: `use eventbus::prelude::*;`.
pub mod prelude {
    pub use eventbus_core::prelude::*;
}

/// The code blocks of README.md, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
