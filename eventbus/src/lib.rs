//! # eventbus
//!
//! One dependency for typed events over Redis: re-exports [`eventbus_core`] (events, handlers,
//! the bus, the in-memory transport) and, with the default `redis` feature, `eventbus-redis`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use eventbus_core::*;

#[cfg(feature = "redis")]
pub use eventbus_redis as redis;
