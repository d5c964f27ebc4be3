//! The lifecycle of a bus: start the registered handlers, run until told to stop, shut down.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Bus;
use crate::dispatch;
use crate::error::{Error, Result};
use crate::handler::registered_handlers;
use crate::topology::Topology;

impl Bus {
    /// Starts every `#[handler]` linked into this binary, then runs until SIGTERM, Ctrl-C
    /// (SIGINT) or [`Bus::shutdown`]; then shuts down like [`Bus::shutdown`]: stops reading,
    /// lets in-flight handlers finish (at most [`BusConfig::shutdown_timeout`](crate::BusConfig::shutdown_timeout)),
    /// acks and closes. [`BusConfig::shutdown_on_signals`](crate::BusConfig::shutdown_on_signals)
    /// `false` leaves signals to the application, which stops the bus with
    /// [`Bus::shutdown_token`] or [`Bus::shutdown`].
    ///
    /// Fails at start when two event types map to one channel (naming both), or when no handler
    /// is linked at all. Logs how many handlers it found per event type: a handler crate that
    /// the binary never references is not linked (add `use my_handlers as _;`).
    pub async fn run_registered_handlers(&self) -> Result<()> {
        self.start_registered_handlers().await?;
        super::stop::until_stopped(&self.engine).await;
        self.shutdown().await;
        Ok(())
    }

    /// Starts every `#[handler]` linked into this binary and returns how many were started,
    /// without waiting: for a service that goes on to publish or serve requests itself.
    /// [`Bus::run_registered_handlers`] is this plus waiting for shutdown.
    ///
    /// ```no_run
    /// # use eventbus_core::prelude::*;
    /// # async fn demo() -> eventbus_core::Result<()> {
    /// let bus = Bus::memory();
    /// let started = bus.start_registered_handlers().await?;
    /// tracing::info!(started, "handlers running");
    /// // ... serve HTTP, publish events ...
    /// bus.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn start_registered_handlers(&self) -> Result<usize> {
        let topology = Topology::from_registry();
        topology.check_channels()?;
        let handlers = registered_handlers();
        if handlers.is_empty() {
            return Err(Error::NoHandlers);
        }
        crate::state::check_registered(&handlers, self.engine.state_map())?;
        if !self.engine.mark_started() {
            return Err(Error::AlreadyStarted);
        }
        for event in &topology.events {
            let n = handlers
                .iter()
                .filter(|h| h.event.rust_type == event.rust_type)
                .count();
            tracing::info!(event = event.rust_type, channel = %self.key(event.channel), durability = %event.durability, handlers = n, "event type");
        }
        for reg in &handlers {
            dispatch::start(
                &self.engine,
                Arc::from(reg.name),
                reg.event,
                reg.options,
                (reg.make)(),
            )
            .await?;
        }
        tracing::info!(
            handlers = handlers.len(),
            transport = self.engine.transport().name(),
            "registered handlers started"
        );
        Ok(handlers.len())
    }

    /// Stops every handler of this bus: stop reading, finish in-flight handler calls, ack, close
    /// the transport. Returns when all of that is done; publishing afterwards fails with
    /// [`Error::Closed`]. Calls still running after
    /// [`BusConfig::shutdown_timeout`](crate::BusConfig::shutdown_timeout) are abandoned (and
    /// logged): their entries stay pending, and the next instance of this consumer name handles
    /// them first.
    pub async fn shutdown(&self) {
        let engine = &self.engine;
        engine.shutdown_token().cancel();
        engine.tasks().close();
        super::stop::drain(engine).await;
        crate::consumers::release(engine).await;
        // Only now: handlers that were finishing could still publish follow-ups and requests.
        engine.closed_token().cancel();
        engine.transport().close().await;
    }

    /// A token cancelled when the bus shuts down; cancel it to trigger a shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.engine.shutdown_token().clone()
    }
}
