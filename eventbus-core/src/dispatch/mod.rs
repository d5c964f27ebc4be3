//! The dispatcher shared by every transport: it takes deliveries from a subscription or a stream
//! consumer and runs the handler on them with the delivery rules of the bus.
//!
//! * at most `concurrency` handler calls in flight per handler; a stream consumer fetches no
//!   more entries than it has room for (backpressure instead of buffering);
//! * an error or a panic is a failed delivery: retried after an exponential backoff until
//!   `max_deliveries`, then written to the dead-letter stream with the reason and acked;
//! * a payload that does not decode is dead-lettered at once (retrying cannot fix it);
//! * a stream entry is acked only after its handler succeeded or it was dead-lettered; acks are
//!   batched, and an ack that failed is sent again with the next acks or after the next read;
//! * a `dedup` handler's entry whose event id its group handled already is acked without a
//!   call; after a successful call the id is marked, then acked (see `dedup.rs`);
//! * on shutdown, reading stops, the entries of a read in flight and the calls in flight are
//!   handled and acked; an entry waiting for a retry stays pending in its stream and is
//!   delivered again later (first of all to the same consumer name).
//!
//! Handler calls run concurrently inside the dispatcher task (no task spawned per message).

mod start;
#[cfg(test)]
mod tests;

pub(crate) use start::{Running, start, start_pattern};

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::dedup;
use crate::engine::{Call, CallOutcome, Engine};
use crate::envelope::{self, Metadata};
use crate::event::EventDescriptor;
use crate::handler::{ErasedHandler, HandlerFailure, HandlerOptions};
use crate::stats::Stats;
use crate::transport::{DeadLetter, Delivery, StreamConsumer, Subscription};

/// One running handler.
pub(crate) struct Runner {
    pub(crate) engine: Arc<Engine>,
    pub(crate) name: Arc<str>,
    event: Option<EventDescriptor>,
    options: HandlerOptions,
    handler: ErasedHandler,
    pub(crate) group: String,
    dlq: String,
    pub(crate) cancel: CancellationToken,
}

/// What to do with a stream entry once its processing ended.
enum Outcome {
    /// Handled or dead-lettered: ack it.
    Ack(Option<String>),
    /// Leave it pending (shutdown during a retry, dead-letter write failed): delivered again.
    Keep,
}

impl Runner {
    pub(crate) fn new(
        engine: Arc<Engine>,
        name: Arc<str>,
        event: Option<EventDescriptor>,
        options: HandlerOptions,
        handler: ErasedHandler,
        group: String,
        dlq: String,
    ) -> Self {
        let cancel = engine.shutdown_token().child_token();
        Runner {
            engine,
            name,
            event,
            options,
            handler,
            group,
            dlq,
            cancel,
        }
    }

    fn stats(&self) -> &Stats {
        self.engine.stats()
    }

    /// Decodes one delivery and runs the handler on it with retries.
    ///
    /// The paths that are not taken for most messages (dead letters, replies, dedup marks) are
    /// boxed: their futures would otherwise size this one, which is built and moved into the
    /// dispatcher's queue for every message.
    async fn process(&self, delivery: Delivery) -> Outcome {
        let _in_flight = self.engine.in_flight().token();
        let Delivery {
            channel,
            body,
            entry_id,
            delivery_count,
            token: _token,
        } = delivery;
        Stats::incr(&self.stats().delivered);
        let limit = self.engine.config().max_payload_bytes;
        let decoded = if body.len() > limit {
            Err(format!(
                "payload of {} bytes exceeds the limit of {limit} bytes",
                body.len()
            ))
        } else {
            // The decoder reads bytes from any peer: a panic in it must not kill the dispatcher.
            std::panic::catch_unwind(AssertUnwindSafe(|| envelope::decode(&channel, &body)))
                .unwrap_or_else(|panic| {
                    Err(crate::DecodeError::new(
                        &channel,
                        format!("decoder panicked: {}", panic_message(&*panic)),
                        &body.excerpt_source(),
                    ))
                })
                .map_err(|e| e.to_string())
        };
        let decoded = match decoded {
            Ok(d) => d,
            Err(reason) => {
                Stats::incr(&self.stats().undecodable);
                tracing::warn!(handler = %self.name, %channel, %reason, "undecodable message");
                let letter = self.letter(&channel, entry_id.clone(), delivery_count, reason, body);
                return Box::pin(self.dead_letter(letter, entry_id)).await;
            }
        };
        if let Err(reason) = crate::type_check::check(self.event.as_ref(), &decoded.meta) {
            Stats::incr(&self.stats().undecodable);
            tracing::warn!(handler = %self.name, %channel, %reason, "message of another type");
            return Box::pin(self.refuse(
                &decoded.meta,
                channel,
                entry_id,
                delivery_count,
                reason,
                body,
            ))
            .await;
        }
        let meta = self.fill_bare(decoded.meta, entry_id.as_deref());
        let dedup = self.dedup_key(&meta.id, entry_id.as_deref());
        if let Some((key, _)) = &dedup
            && Box::pin(dedup::seen(&self.engine, key, &self.name)).await
        {
            Stats::incr(&self.stats().duplicates_skipped);
            tracing::debug!(handler = %self.name, %channel, id = %meta.id, "handled by this group already: skipped");
            return Outcome::Ack(entry_id);
        }
        let reply_to = meta.reply_to.clone();
        let mut attempt = delivery_count.max(1);
        if attempt > self.options.max_deliveries {
            // Delivered that often without an ack: an earlier consumer died while handling it
            // (a crash, an abort, running out of memory). Calling the handler again could take
            // this consumer down too, so the entry goes to the dead-letter stream now.
            let reason = format!(
                "delivered {attempt} times, more than max_deliveries ({}), without being handled; \
                 a consumer may have crashed while handling it",
                self.options.max_deliveries
            );
            tracing::warn!(handler = %self.name, %channel, id = %meta.id, %reason, "dead-lettering");
            return Box::pin(self.refuse(&meta, channel, entry_id, attempt, reason, body)).await;
        }
        let mut ctx = Context::new(
            self.engine.clone(),
            meta,
            channel,
            attempt,
            entry_id.clone(),
            self.name.clone(),
        );
        loop {
            // The synchronous part of the call (the typed decode, a closure's body up to its
            // first await) runs inside the catch too.
            let call = async { (self.handler)(decoded.data.clone(), ctx.clone()).await };
            let (reason, permanent) = match AssertUnwindSafe(call).catch_unwind().await {
                Ok(Ok(reply)) => {
                    Stats::incr(&self.stats().handled);
                    self.record(&ctx, &decoded.data, CallOutcome::Handled);
                    if let Some((key, ttl)) = &dedup {
                        Box::pin(dedup::mark(&self.engine, key, *ttl, &self.name)).await;
                    }
                    if let (Some(to), Some(reply)) = (&reply_to, reply) {
                        Box::pin(crate::reply::answer(
                            &self.engine,
                            to,
                            ctx.metadata(),
                            Ok(reply),
                        ))
                        .await;
                    }
                    return Outcome::Ack(entry_id);
                }
                Ok(Err(HandlerFailure::Undecodable(e))) => {
                    Stats::incr(&self.stats().undecodable);
                    (e.to_string(), true)
                }
                Ok(Err(HandlerFailure::Failed(e))) => {
                    let reason = e.to_string();
                    self.record(&ctx, &decoded.data, CallOutcome::Failed(reason.clone()));
                    (reason, e.is_permanent())
                }
                Err(panic) => {
                    let reason = format!("handler panicked: {}", panic_message(&*panic));
                    self.record(&ctx, &decoded.data, CallOutcome::Failed(reason.clone()));
                    (reason, false)
                }
            };
            Stats::incr(&self.stats().failed);
            if permanent || attempt >= self.options.max_deliveries {
                tracing::warn!(handler = %self.name, channel = %ctx.channel(), id = %ctx.id(), attempt, %reason, "giving up: dead-lettering");
                if let Some(to) = &reply_to {
                    Box::pin(crate::reply::answer(
                        &self.engine,
                        to,
                        ctx.metadata(),
                        Err(reason.clone()),
                    ))
                    .await;
                }
                let letter = self.letter(
                    ctx.channel(),
                    entry_id.clone(),
                    attempt,
                    reason,
                    body.clone(),
                );
                return Box::pin(self.dead_letter(letter, entry_id)).await;
            }
            Stats::incr(&self.stats().retried);
            let delay = self.options.backoff_for(attempt);
            tracing::info!(handler = %self.name, channel = %ctx.channel(), id = %ctx.id(), attempt, ?delay, %reason, "handler failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => {
                    tracing::info!(handler = %self.name, id = %ctx.id(), "shutdown during retry backoff; the entry stays pending");
                    return Outcome::Keep;
                }
            }
            attempt += 1;
            ctx = ctx.with_attempt(attempt);
        }
    }

    /// Keeps the call for `testing::consumed` when the bus records.
    fn record(&self, ctx: &Context, data: &Bytes, outcome: CallOutcome) {
        let Some(event) = &self.event else { return };
        self.engine.record_call(|| Call {
            rust_type: event.rust_type,
            handler: self.name.clone(),
            meta: ctx.metadata().clone(),
            data: data.clone(),
            attempt: ctx.attempt(),
            outcome,
        });
    }

    /// The dedup mark of a stream entry for a `dedup` handler, with its ttl.
    fn dedup_key(&self, id: &str, entry_id: Option<&str>) -> Option<(String, Duration)> {
        let ttl = self.options.dedup?;
        let event = self.event.as_ref()?;
        entry_id?;
        let key = dedup::key(self.engine.prefix(), event.channel, &self.group, id);
        Some((key, ttl))
    }

    /// A bare payload has no envelope: give it an id and the event name of the subscription.
    fn fill_bare(&self, mut meta: Metadata, entry_id: Option<&str>) -> Metadata {
        if meta.id.is_empty() {
            meta.id = entry_id
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        }
        if meta.event_type.is_empty()
            && let Some(e) = &self.event
        {
            meta.event_type = Cow::Borrowed(e.name);
        }
        meta
    }

    fn letter(
        &self,
        channel: &str,
        entry_id: Option<String>,
        deliveries: u32,
        reason: String,
        body: envelope::WireBody,
    ) -> DeadLetter {
        DeadLetter {
            dlq: self.dlq.clone(),
            channel: channel.to_owned(),
            entry_id,
            group: self.group.clone(),
            handler: self.name.to_string(),
            reason,
            deliveries,
            body,
        }
    }

    /// Dead-letters a message refused before its handler ran (another event's type, too
    /// many deliveries). A request among them is answered with the reason, so that its sender
    /// learns it at once instead of waiting for its timeout.
    async fn refuse(
        &self,
        meta: &crate::envelope::Metadata,
        channel: String,
        entry_id: Option<String>,
        delivery_count: u32,
        reason: String,
        body: crate::envelope::WireBody,
    ) -> Outcome {
        if let Some(to) = &meta.reply_to {
            crate::reply::answer(&self.engine, to, meta, Err(reason.clone())).await;
        }
        let letter = self.letter(&channel, entry_id.clone(), delivery_count, reason, body);
        self.dead_letter(letter, entry_id).await
    }

    async fn dead_letter(&self, letter: DeadLetter, entry_id: Option<String>) -> Outcome {
        let dlq = letter.dlq.clone();
        match self.engine.transport().dead_letter(letter).await {
            Ok(()) => {
                Stats::incr(&self.stats().dead_lettered);
                Outcome::Ack(entry_id)
            }
            Err(e) => {
                // Not acked: the entry stays pending and is delivered again, nothing is lost.
                tracing::error!(handler = %self.name, %dlq, error = %e, "cannot write the dead letter; the entry stays pending");
                Outcome::Keep
            }
        }
    }
}

/// Runs a pub/sub subscription until it closes or the handler is stopped.
pub(crate) async fn run_pubsub(runner: Runner, mut sub: Box<dyn Subscription>) {
    if runner.options.concurrency <= 1 {
        // One call at a time (the default): awaited in place, without the bookkeeping of
        // concurrent calls. A shutdown is seen between messages; the current call finishes.
        loop {
            tokio::select! {
                biased;
                () = runner.cancel.cancelled() => break,
                next = sub.next() => match next {
                    Some(delivery) => {
                        runner.process(delivery).await;
                    }
                    None => break,
                },
            }
        }
        return;
    }
    let mut in_flight = FuturesUnordered::new();
    loop {
        let room = in_flight.len() < runner.options.concurrency;
        tokio::select! {
            biased;
            () = runner.cancel.cancelled() => break,
            Some(_) = in_flight.next(), if !in_flight.is_empty() => {}
            next = sub.next(), if room => match next {
                Some(delivery) => in_flight.push(runner.process(delivery)),
                None => break,
            },
        }
    }
    drop(sub);
    while in_flight.next().await.is_some() {}
}

/// Runs a durable stream consumer until the handler is stopped.
///
/// On a stop it starts no new read, but a read in flight is awaited (the transport is asked to
/// cut its wait short): Redis puts what it hands over in this consumer's pending list when it
/// replies, so dropping the read would strand those entries. They are handled and acked like
/// the others, then the consumer leaves its group if it owns nothing.
pub(crate) async fn run_stream(runner: Runner, consumer: Arc<dyn StreamConsumer>) {
    let mut in_flight = FuturesUnordered::new();
    let mut fetch: Option<BoxFuture<'static, crate::Result<Vec<Delivery>>>> = None;
    // After a failed read: wait before the next one, while in-flight calls go on.
    let mut backoff: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut acks: Vec<String> = Vec::new();
    let mut failures: u32 = 0;
    loop {
        let room = runner.options.concurrency.saturating_sub(in_flight.len());
        if fetch.is_none() && backoff.is_none() && room > 0 {
            let c = consumer.clone();
            fetch = Some(Box::pin(async move { c.fetch(room).await }));
        }
        tokio::select! {
            biased;
            () = runner.cancel.cancelled() => break,
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                collect(outcome, &mut acks);
                // Take every other call that finished meanwhile, then ack them in one command.
                while let Some(Some(outcome)) = in_flight.next().now_or_never() {
                    collect(outcome, &mut acks);
                }
                flush_acks(&runner, &*consumer, &mut acks).await;
            }
            () = async { backoff.as_mut().expect("guarded by is_some").await }, if backoff.is_some() => {
                backoff = None;
            }
            batch = async { fetch.as_mut().expect("guarded by is_some").await }, if fetch.is_some() => {
                fetch = None;
                // Acks that failed before are sent again after each read, also when no call
                // finishes to carry them.
                flush_acks(&runner, &*consumer, &mut acks).await;
                match batch {
                    Ok(batch) => {
                        failures = 0;
                        for delivery in batch {
                            in_flight.push(runner.process(delivery));
                        }
                    }
                    Err(crate::Error::Closed) => {
                        tracing::debug!(handler = %runner.name, "the transport is closed; the consumer stops");
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        // The first failure is retried at once: a lost connection is opened
                        // again by the next read. Repeated failures back off, up to 5 s.
                        let delay = if failures == 1 {
                            Duration::ZERO
                        } else {
                            Duration::from_millis(100 * 2u64.pow((failures - 1).min(6))).min(Duration::from_secs(5))
                        };
                        tracing::warn!(handler = %runner.name, error = %e, ?delay, "reading the stream failed; retrying");
                        backoff = Some(Box::pin(tokio::time::sleep(delay)));
                    }
                }
            }
        }
    }
    if let Some(read) = fetch.take() {
        let (_, batch) = tokio::join!(consumer.interrupt(), read);
        match batch {
            Ok(batch) => {
                if !batch.is_empty() {
                    tracing::debug!(handler = %runner.name, count = batch.len(), "stopping: handling the entries of the last read");
                }
                for delivery in batch {
                    in_flight.push(runner.process(delivery));
                }
            }
            Err(e) => {
                tracing::debug!(handler = %runner.name, error = %e, "stopping: the last read failed");
            }
        }
    }
    // Acked as they finish: a call still running when `shutdown_timeout` ends the wait must not
    // hold back the acks of the others (they would be handled again).
    while let Some(outcome) = in_flight.next().await {
        collect(outcome, &mut acks);
        while let Some(Some(outcome)) = in_flight.next().now_or_never() {
            collect(outcome, &mut acks);
        }
        flush_acks(&runner, &*consumer, &mut acks).await;
    }
    consumer.leave().await;
    if let Some(event) = &runner.event {
        let stream = runner.engine.key(event.channel);
        runner
            .engine
            .consumers()
            .stopped(stream, &runner.group, runner.options.mode);
    }
}

fn collect(outcome: Outcome, acks: &mut Vec<String>) {
    if let Outcome::Ack(Some(id)) = outcome {
        acks.push(id);
    }
}

/// Acks that failed and wait for the next attempt, at most: beyond, the oldest are given up
/// (they stay pending and are delivered again).
const ACK_RETRY_LIMIT: usize = 100_000;

/// Acks `acks`. When that fails they are kept and sent again with the next acks, or after the
/// next read: an ack is idempotent, and an entry whose ack never arrives would otherwise wait
/// for a claim (`claim_idle`) and be handled again.
async fn flush_acks(runner: &Runner, consumer: &dyn StreamConsumer, acks: &mut Vec<String>) {
    if acks.is_empty() {
        return;
    }
    match consumer.ack(acks).await {
        Ok(()) => acks.clear(),
        Err(e) => {
            tracing::warn!(handler = %runner.name, error = %e, count = acks.len(), "ack failed; sent again with the next acks (until then the entries stay pending)");
            if acks.len() > ACK_RETRY_LIMIT {
                let given_up = acks.len() - ACK_RETRY_LIMIT;
                acks.drain(..given_up);
                tracing::warn!(handler = %runner.name, given_up, "too many acks waiting; the oldest are given up and their entries will be delivered again");
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
