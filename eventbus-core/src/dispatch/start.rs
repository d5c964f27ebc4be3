//! Starting a handler: check its options, open its subscription or stream consumer, and run its
//! dispatcher in a task the bus waits for on shutdown.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Runner, run_pubsub, run_stream};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Durability, EventDescriptor};
use crate::handler::{ErasedHandler, HandlerOptions};
use crate::transport::{ConsumerSpec, SubscribeSpec, Target};

/// A started handler: its stop signal and its task.
pub(crate) struct Running {
    pub(crate) cancel: CancellationToken,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

/// Starts `handler` for `event`: a pub/sub subscription (ephemeral) or a stream consumer
/// (durable), each driven by its own dispatcher task.
pub(crate) async fn start(
    engine: &Arc<Engine>,
    name: Arc<str>,
    event: EventDescriptor,
    options: HandlerOptions,
    handler: ErasedHandler,
) -> Result<Running> {
    if engine.shutdown_token().is_cancelled() {
        return Err(Error::Closed);
    }
    crate::options::check(&name, &event, &options)?;
    let group = options
        .group
        .map_or_else(|| name.to_string(), str::to_owned);
    if options.dedup.is_some() {
        let probe = crate::dedup::key(engine.prefix(), event.channel, &group, "");
        crate::dedup::probe(engine, &probe).await?;
    }
    let dlq = engine.dead_letter_key(&event);
    let runner = Runner::new(
        engine.clone(),
        name,
        Some(event),
        options,
        handler,
        group,
        dlq,
    );
    match event.durability {
        Durability::Ephemeral => {
            let target = if event.is_templated() {
                Target::Pattern(engine.key(event.pattern))
            } else {
                Target::Channel(engine.key(event.channel))
            };
            start_pubsub(engine, runner, target).await
        }
        Durability::Durable => {
            let spec = ConsumerSpec {
                stream: engine.key(event.channel),
                group: runner.group.clone(),
                consumer: crate::consumers::consumer_name(engine, options.mode).await,
                mode: options.mode,
                start: engine.config().start_from,
                claim_idle: engine.config().claim_idle,
                stats: engine.stats().clone(),
            };
            let consumer = engine.transport().consume(spec).await?;
            engine
                .consumers()
                .started(engine.key(event.channel), &runner.group, options.mode);
            tracing::debug!(handler = %runner.name, stream = %engine.key(event.channel), group = %runner.group, mode = ?options.mode, "stream consumer started");
            Ok(spawn(engine, runner, |r| run_stream(r, consumer)))
        }
    }
}

/// Starts a raw handler on every pub/sub channel matching `pattern` (namespace added).
pub(crate) async fn start_pattern(
    engine: &Arc<Engine>,
    pattern: &str,
    handler: ErasedHandler,
) -> Result<Running> {
    if engine.shutdown_token().is_cancelled() {
        return Err(Error::Closed);
    }
    let runner = Runner::new(
        engine.clone(),
        Arc::from(format!("pattern {pattern}")),
        None,
        HandlerOptions::DEFAULT,
        handler,
        String::new(),
        format!("{}eventbus.patterns.dlq", engine.prefix()),
    );
    start_pubsub(engine, runner, Target::Pattern(engine.key(pattern))).await
}

async fn start_pubsub(engine: &Arc<Engine>, runner: Runner, target: Target) -> Result<Running> {
    let sub = engine
        .transport()
        .subscribe(SubscribeSpec {
            target: target.clone(),
            capacity: engine.config().subscriber_capacity,
            capacity_bytes: engine.config().subscriber_capacity_bytes,
            stats: engine.stats().clone(),
        })
        .await?;
    tracing::debug!(handler = %runner.name, target = ?target, "pub/sub subscription started");
    Ok(spawn(engine, runner, |r| run_pubsub(r, sub)))
}

fn spawn<F, Fut>(engine: &Engine, runner: Runner, run: F) -> Running
where
    F: FnOnce(Runner) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cancel = runner.cancel.clone();
    let done = engine.tasks().spawn(run(runner));
    Running { cancel, done }
}
