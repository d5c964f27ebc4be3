//! Counters of what the bus did, readable at any time with `Bus::stats()`.
//!
//! Every counter is also emitted as a `tracing` event at the place it changes where the change is
//! worth a log line (drops, retries, dead letters, reconnects).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, shared by the bus, its dispatcher and its transport.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Events accepted by the transport.
    published,
    /// Messages handed to a handler (each attempt counts).
    delivered,
    /// Handler calls that succeeded.
    handled,
    /// Handler calls that failed (errors and panics).
    failed,
    /// Failed deliveries scheduled for another attempt.
    retried,
    /// Messages written to a dead-letter stream.
    dead_lettered,
    /// Messages that could not be decoded.
    undecodable,
    /// Pub/sub messages dropped because a subscriber's buffer was full, or lost while the
    /// connection was down.
    dropped,
    /// Connections re-established after a loss.
    reconnects,
    /// Losses of the pub/sub connection: closed by the server (a subscriber that fell behind
    /// its `client-output-buffer-limit pubsub`, a restart, `CLIENT KILL`) or found dead by the
    /// health check. Messages published until its subscriptions were renewed are lost; they are
    /// not in `dropped`, since nobody can count them. The log says the likely cause.
    pubsub_disconnects,
    /// Consumer groups created again after they vanished (FLUSHALL, restart without persistence).
    groups_recreated,
    /// Deliveries of a `dedup` handler acked without calling it: its group had handled that
    /// event id already (see [`HandlerOptions::dedup`](crate::HandlerOptions::dedup)).
    duplicates_skipped,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
