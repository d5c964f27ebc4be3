//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Waits until `cond` holds, polling every 5 ms; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Five seconds: the bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(5);
