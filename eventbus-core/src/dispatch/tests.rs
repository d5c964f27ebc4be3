//! The dispatcher's rules, tested on a runner alone: a scripted stream consumer hands out
//! entries and records acks, the memory transport keeps dead letters and dedup marks. No bus,
//! no Redis; time is paused, so backoff delays are exact.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::config::BusConfig;
use crate::engine::{PublishOptions, StateMap};
use crate::envelope::{Encoded, WireBody};
use crate::error::{HandlerError, Result};
use crate::event::Durability;
use crate::handler::HandlerFuture;
use crate::memory::MemoryTransport;
use crate::transport::{
    ConsumerSpec, DeadLetterEntry, Outgoing, Receipt, SubscribeSpec, Transport,
};

const STREAM: &str = "shop.Order";
const DLQ: &str = "shop.Order.dlq";

fn descriptor() -> EventDescriptor {
    EventDescriptor {
        name: STREAM,
        channel: STREAM,
        pattern: STREAM,
        rust_type: "shop::Order",
        durability: Durability::Durable,
        version: 1,
        max_len: None,
        reply: None,
    }
}

fn engine_on(transport: Arc<dyn Transport>) -> Arc<Engine> {
    Arc::new(Engine::new(
        transport,
        BusConfig::default(),
        StateMap::new(),
        true,
    ))
}

fn engine() -> Arc<Engine> {
    engine_on(Arc::new(MemoryTransport::new()))
}

/// A handler from a closure over the payload number and the attempt.
fn handler<F, Fut>(f: F) -> ErasedHandler
where
    F: Fn(u64, u32) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |data: Bytes, ctx: Context| {
        let f = f.clone();
        Box::pin(async move {
            let n: u64 = serde_json::from_slice(&data).map_err(|e| {
                HandlerFailure::Undecodable(crate::DecodeError::new(ctx.channel(), e, &data))
            })?;
            f(n, ctx.attempt())
                .await
                .map(|()| None)
                .map_err(HandlerFailure::Failed)
        }) as HandlerFuture
    })
}

/// A handler that counts its calls and answers call number `n` (from 0) with `result(n)`.
fn counting<F>(result: F) -> (Arc<AtomicUsize>, ErasedHandler)
where
    F: Fn(usize) -> Result<(), HandlerError> + Send + Sync + 'static,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let h = handler(move |_, _| {
        let outcome = result(counted.fetch_add(1, Ordering::SeqCst));
        async move { outcome }
    });
    (calls, h)
}

fn runner(engine: &Arc<Engine>, options: HandlerOptions, handler: ErasedHandler) -> Runner {
    Runner::new(
        engine.clone(),
        Arc::from("tests::handler"),
        Some(descriptor()),
        options,
        handler,
        "billing".to_owned(),
        DLQ.to_owned(),
    )
}

/// A stream entry with payload `n`, delivered for the `count`th time.
fn entry(engine: &Engine, n: u64, count: u32) -> Delivery {
    let meta = engine.metadata(STREAM, Some(1), &PublishOptions::default());
    let encoded = Encoded::new(meta, &n).expect("a number encodes");
    Delivery {
        channel: STREAM.to_owned(),
        body: WireBody::Fields(
            encoded
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v))
                .collect(),
        ),
        entry_id: Some(format!("{n}-0")),
        delivery_count: count,
        token: None,
    }
}

fn fast() -> HandlerOptions {
    HandlerOptions::new()
        .backoff(Duration::from_millis(100))
        .backoff_max(Duration::from_secs(1))
}

async fn dead_letters(engine: &Engine) -> Vec<DeadLetterEntry> {
    engine
        .transport()
        .dead_letters(DLQ, 100)
        .await
        .expect("the memory transport lists dead letters")
}

fn acked(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Ack(Some(_)))
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_is_retried_after_a_doubling_backoff_until_it_succeeds() {
    let engine = engine();
    let started = Instant::now();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let r = runner(
        &engine,
        fast(),
        handler(move |_, attempt| {
            seen.lock().unwrap().push((attempt, started.elapsed()));
            async move {
                if attempt < 3 {
                    Err(HandlerError::from("not yet"))
                } else {
                    Ok(())
                }
            }
        }),
    );
    let outcome = r.process(entry(&engine, 1, 1)).await;
    assert!(acked(&outcome));
    let calls = calls.lock().unwrap().clone();
    let ms = |d: u64| Duration::from_millis(d);
    assert_eq!(calls, vec![(1, ms(0)), (2, ms(100)), (3, ms(300))]);
    let stats = engine.stats().snapshot();
    assert_eq!((stats.failed, stats.retried, stats.handled), (2, 2, 1));
    assert!(dead_letters(&engine).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_entry_failing_every_time_is_dead_lettered_after_max_deliveries_and_acked() {
    let engine = engine();
    let r = runner(
        &engine,
        fast().max_deliveries(3),
        handler(|_, attempt| async move { Err(HandlerError::from(format!("boom {attempt}"))) }),
    );
    let outcome = r.process(entry(&engine, 7, 1)).await;
    assert!(acked(&outcome), "dead-lettered entries are acked");
    let dead = dead_letters(&engine).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0].letter;
    assert_eq!(letter.reason, "boom 3");
    assert_eq!(letter.deliveries, 3);
    assert_eq!(letter.group, "billing");
    assert_eq!(letter.entry_id.as_deref(), Some("7-0"));
    assert_eq!(engine.stats().snapshot().dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_dead_lettered_without_retries() {
    let engine = engine();
    let (calls, h) = counting(|_| Err(HandlerError::permanent("invalid order")));
    let r = runner(&engine, fast(), h);
    assert!(acked(&r.process(entry(&engine, 1, 1)).await));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        dead_letters(&engine).await[0].letter.reason,
        "invalid order"
    );
    assert_eq!(engine.stats().snapshot().retried, 0);
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_failed_delivery_and_the_next_attempt_runs() {
    let engine = engine();
    let r = runner(
        &engine,
        fast(),
        handler(|_, attempt| async move {
            if attempt == 1 {
                panic!("first call panics");
            }
            Ok(())
        }),
    );
    assert!(acked(&r.process(entry(&engine, 1, 1)).await));
    let stats = engine.stats().snapshot();
    assert_eq!((stats.failed, stats.handled), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_panic_before_the_first_await_is_caught_too() {
    let engine = engine();
    let sync_panic: ErasedHandler = Arc::new(|_, _| panic!("panics while building the future"));
    let r = runner(&engine, fast().max_deliveries(1), sync_panic);
    assert!(acked(&r.process(entry(&engine, 1, 1)).await));
    let dead = dead_letters(&engine).await;
    assert!(
        dead[0]
            .letter
            .reason
            .contains("panics while building the future"),
        "{}",
        dead[0].letter.reason
    );
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_payload_is_dead_lettered_at_once_without_a_call() {
    let engine = engine();
    let (calls, h) = counting(|_| Ok(()));
    let r = runner(&engine, fast(), h);
    let garbage = Delivery {
        body: WireBody::Fields(vec![("event".to_owned(), Bytes::from_static(b"{not json"))]),
        ..entry(&engine, 1, 1)
    };
    assert!(acked(&r.process(garbage).await));
    // A payload that is JSON but not the handler's type: refused by the typed parse.
    let meta = engine.metadata(STREAM, Some(1), &PublishOptions::default());
    let wrong = Encoded::new(meta, &"a string").expect("encodes");
    let wrong = Delivery {
        body: WireBody::Json(wrong.to_json()),
        ..entry(&engine, 2, 1)
    };
    assert!(acked(&r.process(wrong).await));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(dead_letters(&engine).await.len(), 2);
    assert_eq!(engine.stats().snapshot().undecodable, 2);
    assert_eq!(engine.stats().snapshot().retried, 0);
}

#[tokio::test(start_paused = true)]
async fn an_entry_delivered_more_than_max_deliveries_is_dead_lettered_before_any_call() {
    let engine = engine();
    let (calls, h) = counting(|_| Ok(()));
    let r = runner(&engine, fast().max_deliveries(3), h);
    assert!(acked(&r.process(entry(&engine, 1, 4)).await));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let reason = &dead_letters(&engine).await[0].letter.reason;
    assert!(reason.contains("more than max_deliveries (3)"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_entry_continues_counting_attempts_from_its_delivery_count() {
    let engine = engine();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let r = runner(
        &engine,
        fast().max_deliveries(3),
        handler(move |_, attempt| {
            seen.lock().unwrap().push(attempt);
            async { Err(HandlerError::from("down")) }
        }),
    );
    r.process(entry(&engine, 1, 2)).await;
    assert_eq!(*attempts.lock().unwrap(), vec![2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_the_backoff_leaves_the_entry_pending() {
    let engine = engine();
    let r = runner(
        &engine,
        fast(),
        handler(|_, _| async { Err(HandlerError::from("down")) }),
    );
    let cancel = r.cancel.clone();
    let process = r.process(entry(&engine, 1, 1));
    tokio::pin!(process);
    // The first call fails; the runner waits out its backoff, and the bus shuts down meanwhile.
    tokio::select! {
        _ = &mut process => panic!("the retry must wait for its backoff"),
        () = tokio::time::sleep(Duration::from_millis(50)) => cancel.cancel(),
    }
    assert!(matches!(process.await, Outcome::Keep));
    assert!(dead_letters(&engine).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dedup_handler_skips_an_event_its_group_handled_and_marks_what_it_handles() {
    let engine = engine();
    let (calls, h) = counting(|_| Ok(()));
    let r = runner(&engine, fast().dedup(Duration::from_secs(60)), h);
    let first = entry(&engine, 1, 1);
    let again = Delivery {
        body: first.body.clone(),
        delivery_count: 2,
        ..entry(&engine, 1, 2)
    };
    assert!(acked(&r.process(first).await));
    assert!(acked(&r.process(again).await), "a skipped entry is acked");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(engine.stats().snapshot().duplicates_skipped, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dedup_handler_that_failed_marks_nothing_so_the_redelivery_runs() {
    let engine = engine();
    let (calls, h) = counting(|n| {
        if n == 0 {
            Err(HandlerError::from("first fails"))
        } else {
            Ok(())
        }
    });
    let r = runner(
        &engine,
        fast().max_deliveries(1).dedup(Duration::from_secs(60)),
        h,
    );
    let first = entry(&engine, 1, 1);
    let body = first.body.clone();
    r.process(first).await;
    let replay = Delivery {
        body,
        ..entry(&engine, 1, 1)
    };
    r.process(replay).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(engine.stats().snapshot().duplicates_skipped, 0);
}

/// A stream consumer that hands out scripted entries and records what was acked.
struct Scripted {
    entries: Mutex<VecDeque<Delivery>>,
    acked: Mutex<Vec<String>>,
    asked: Mutex<Vec<usize>>,
    /// Acks that fail before one succeeds.
    failing_acks: AtomicUsize,
}

impl Scripted {
    fn new(entries: Vec<Delivery>) -> Arc<Self> {
        Arc::new(Scripted {
            entries: Mutex::new(entries.into()),
            acked: Mutex::new(Vec::new()),
            asked: Mutex::new(Vec::new()),
            failing_acks: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl StreamConsumer for Scripted {
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>> {
        self.asked.lock().unwrap().push(max);
        let batch: Vec<Delivery> = {
            let mut entries = self.entries.lock().unwrap();
            let n = max.min(entries.len());
            entries.drain(..n).collect()
        };
        if batch.is_empty() {
            // Like a blocking read that found nothing.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(batch)
    }

    async fn ack(&self, entry_ids: &[String]) -> Result<()> {
        let failing = self.failing_acks.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing_acks.store(failing - 1, Ordering::SeqCst);
            return Err(crate::Error::transport("scripted", "XACK timed out", None));
        }
        self.acked.lock().unwrap().extend_from_slice(entry_ids);
        Ok(())
    }
}

/// Runs `run_stream` until `n` entries were acked.
async fn drive(runner: Runner, consumer: Arc<Scripted>, n: usize) {
    let cancel = runner.cancel.clone();
    let task = tokio::spawn(run_stream(runner, consumer.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.acked.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "entries were not acked in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    task.await.expect("the dispatcher does not panic");
}

#[tokio::test(start_paused = true)]
async fn at_most_concurrency_calls_run_at_once_and_reads_ask_only_for_free_room() {
    let engine = engine();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r2, p2) = (running.clone(), peak.clone());
    let r = runner(
        &engine,
        fast().concurrency(3),
        handler(move |_, _| {
            let (running, peak) = (r2.clone(), p2.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    );
    let consumer = Scripted::new((0..10).map(|n| entry(&engine, n, 1)).collect());
    drive(r, consumer.clone(), 10).await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    assert!(
        consumer
            .asked
            .lock()
            .unwrap()
            .iter()
            .all(|&m| (1..=3).contains(&m))
    );
    let mut acked = consumer.acked.lock().unwrap().clone();
    acked.sort_by_key(|id| id.trim_end_matches("-0").parse::<u64>().unwrap());
    assert_eq!(acked, (0..10).map(|n| format!("{n}-0")).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn with_concurrency_one_entries_are_handled_in_stream_order() {
    let engine = engine();
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let r = runner(
        &engine,
        fast(),
        handler(move |n, _| {
            seen.lock().unwrap().push(n);
            async move {
                // Later entries finish faster: only one at a time keeps the order.
                tokio::time::sleep(Duration::from_millis(10 * (10 - n))).await;
                Ok(())
            }
        }),
    );
    let consumer = Scripted::new((0..10).map(|n| entry(&engine, n, 1)).collect());
    drive(r, consumer.clone(), 10).await;
    assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(
        *consumer.acked.lock().unwrap(),
        (0..10).map(|n| format!("{n}-0")).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_finishes_calls_in_flight_and_acks_them() {
    let engine = engine();
    let r = runner(
        &engine,
        fast().concurrency(4),
        handler(|_, _| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(())
        }),
    );
    let cancel = r.cancel.clone();
    let consumer = Scripted::new((0..4).map(|n| entry(&engine, n, 1)).collect());
    let task = tokio::spawn(run_stream(r, consumer.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    task.await.expect("the dispatcher does not panic");
    assert_eq!(consumer.acked.lock().unwrap().len(), 4);
    assert_eq!(engine.stats().snapshot().handled, 4);
}

/// The memory transport, except that dead letters cannot be written.
struct NoDeadLetters(MemoryTransport);

#[async_trait]
impl Transport for NoDeadLetters {
    fn name(&self) -> &'static str {
        "no-dead-letters"
    }
    async fn publish(&self, message: Outgoing) -> Result<Receipt> {
        self.0.publish(message).await
    }
    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn Subscription>> {
        self.0.subscribe(spec).await
    }
    async fn consume(&self, spec: ConsumerSpec) -> Result<Arc<dyn StreamConsumer>> {
        self.0.consume(spec).await
    }
    async fn dead_letter(&self, _letter: DeadLetter) -> Result<()> {
        Err(crate::Error::transport(self.name(), "disk full", None))
    }
    async fn dead_letters(&self, dlq: &str, count: usize) -> Result<Vec<DeadLetterEntry>> {
        self.0.dead_letters(dlq, count).await
    }
}

#[tokio::test(start_paused = true)]
async fn an_entry_whose_dead_letter_cannot_be_written_stays_pending() {
    let engine = engine_on(Arc::new(NoDeadLetters(MemoryTransport::new())));
    let r = runner(
        &engine,
        fast().max_deliveries(1),
        handler(|_, _| async { Err(HandlerError::from("down")) }),
    );
    assert!(matches!(
        r.process(entry(&engine, 1, 1)).await,
        Outcome::Keep
    ));
    assert_eq!(engine.stats().snapshot().dead_lettered, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_ack_is_sent_again_without_waiting_for_a_claim() {
    let engine = engine();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let r = runner(
        &engine,
        fast(),
        handler(move |_, _| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }),
    );
    // The only entry's ack fails twice; no other call finishes to carry it: the reads that
    // follow send it again.
    let consumer = Scripted::new(vec![entry(&engine, 1, 1)]);
    consumer.failing_acks.store(2, Ordering::SeqCst);
    drive(r, consumer.clone(), 1).await;
    assert_eq!(*consumer.acked.lock().unwrap(), vec!["1-0".to_owned()]);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "handled once");
}

#[tokio::test(start_paused = true)]
async fn a_request_refused_before_its_handler_runs_is_answered_with_the_reason() {
    let engine = engine();
    let (calls, h) = counting(|_| Ok(()));
    let r = runner(&engine, fast(), h);
    // Another event's type on this stream, asking for a reply.
    let meta = engine
        .metadata("shop.Refund", Some(1), &PublishOptions::default())
        .with_reply_to("replies.peer");
    let request = Encoded::new(meta.clone(), &1u64).expect("encodes");
    let request = Delivery {
        body: WireBody::Json(request.to_json()),
        ..entry(&engine, 1, 1)
    };
    assert!(acked(&r.process(request).await));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(dead_letters(&engine).await.len(), 1);
    let replies = engine
        .sent(crate::reply::REPLY_TYPE)
        .expect("the test engine records");
    assert_eq!(replies.len(), 1, "one error reply");
    let error = replies[0]
        .meta
        .header(crate::reply::ERROR_HEADER)
        .unwrap_or("");
    assert!(
        error.contains("shop.Refund") && error.contains(STREAM),
        "the reply names both types: {error:?}"
    );
    assert_eq!(replies[0].meta.causation_id(), Some(meta.id()));
}
