//! When a bus stops, and how long its stop may take.
//!
//! A service is told to stop by a signal: SIGTERM from `docker stop`, Kubernetes or systemd,
//! SIGINT from Ctrl-C. Both start the same graceful shutdown as [`Bus::shutdown`](super::Bus),
//! unless [`BusConfig::shutdown_on_signals`](crate::BusConfig::shutdown_on_signals) is off. The
//! shutdown waits for handler calls in flight at most
//! [`BusConfig::shutdown_timeout`](crate::BusConfig::shutdown_timeout): the supervisor kills
//! the process when its grace period ends, and what an abandoned call was handling is in Redis
//! either way, pending under the consumer's name.

use std::future::pending;

use crate::engine::Engine;

/// Returns when the bus is to stop: its shutdown token was cancelled or, with
/// `shutdown_on_signals`, the process received SIGTERM or SIGINT.
pub(super) async fn until_stopped(engine: &Engine) {
    let shutdown = engine.shutdown_token();
    if !engine.config().shutdown_on_signals {
        shutdown.cancelled().await;
        return;
    }
    tokio::select! {
        signal = stop_signal() => tracing::info!(signal, "shutting down"),
        () = shutdown.cancelled() => {}
    }
}

/// Waits for the running handlers to finish, at most `shutdown_timeout`; true when they did.
/// Otherwise logs what it abandons: those calls go on until the process exits, and their
/// entries stay pending under this bus's consumer name.
pub(super) async fn drain(engine: &Engine) -> bool {
    let limit = engine.config().shutdown_timeout;
    if tokio::time::timeout(limit, engine.tasks().wait())
        .await
        .is_ok()
    {
        return true;
    }
    let consumer = engine.consumers().name().unwrap_or("-");
    let groups = engine.consumers().running();
    tracing::warn!(
        shutdown_timeout = ?limit,
        handler_calls = engine.in_flight().get(),
        handlers = engine.tasks().len(),
        consumer,
        ?groups,
        "shutdown_timeout passed with handler calls still running; they are abandoned: their \
         entries stay pending under this consumer name, and the next instance of that name \
         handles them first (another consumer claims them after claim_idle)"
    );
    false
}

/// Waits for SIGTERM or SIGINT and names it. A signal that cannot be listened for is logged
/// and never arrives.
async fn stop_signal() -> &'static str {
    tokio::select! {
        () = terminate() => "SIGTERM",
        () = interrupt() => "SIGINT",
    }
}

async fn interrupt() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!("cannot listen for SIGINT (Ctrl-C): {e}");
        pending::<()>().await;
    }
}

#[cfg(unix)]
async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            if term.recv().await.is_none() {
                pending::<()>().await;
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    pending::<()>().await;
}
