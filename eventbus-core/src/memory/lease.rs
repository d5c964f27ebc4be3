//! Leases on consumer names, in process: what the Redis transport does with a script of `GET`
//! and `SET key holder PX ttl` (see [`Transport::hold_lease`](crate::Transport::hold_lease)).
//!
//! A lease remembers the connection (transport handle) that took it: closing that handle ends
//! its leases, as a crashed process's lease is recognised at once on its own machine.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::lock;
use crate::transport::LeaseState;

#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<String, Lease>>,
}

struct Lease {
    holder: String,
    until: Instant,
    conn: u64,
}

impl Leases {
    /// Takes or renews `key` for `holder` when it is free, expired, held by `holder` or by
    /// `replacing`.
    pub(super) fn hold(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        replacing: Option<&str>,
        conn: u64,
    ) -> LeaseState {
        let now = Instant::now();
        let mut held = lock(&self.held);
        if let Some(lease) = held.get(key)
            && lease.until > now
            && lease.holder != holder
            && Some(lease.holder.as_str()) != replacing
        {
            return LeaseState::HeldBy {
                holder: lease.holder.clone(),
                remaining: lease.until - now,
            };
        }
        let until = now.checked_add(ttl).unwrap_or(now);
        held.insert(
            key.to_owned(),
            Lease {
                holder: holder.to_owned(),
                until,
                conn,
            },
        );
        LeaseState::Held
    }

    /// Ends `key` if `holder` holds it.
    pub(super) fn release(&self, key: &str, holder: &str) {
        let mut held = lock(&self.held);
        if held.get(key).is_some_and(|l| l.holder == holder) {
            held.remove(key);
        }
    }

    /// Ends every lease taken through connection `conn`.
    pub(super) fn release_connection(&self, conn: u64) {
        lock(&self.held).retain(|_, lease| lease.conn != conn);
    }
}
