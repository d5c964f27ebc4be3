//! The conformance suite: every delivery rule eventbus promises, as one function each, run by
//! every transport's tests. A transport proves itself by passing it; a rule is written once.
//!
//! Enabled by the `conformance` cargo feature (a dev-dependency feature: nothing here is for
//! production code). A transport plugs in by implementing [`Backend`], a factory of buses on one
//! shared backend (one Redis server, one in-process store), and running the rules, one test
//! each:
//!
//! ```ignore
//! // tests/conformance.rs of a transport crate, with
//! // eventbus-core = { ..., features = ["conformance"] } among its dev-dependencies.
//! eventbus_core::conformance_tests!(my_transport_tests::MyBackend::start().await);
//! ```
//!
//! or all of them in one test with [`run_all`]. The memory transport's run is
//! `eventbus-core/tests/conformance_memory.rs`, with [`MemoryBackend`]; the Redis transport's is
//! `eventbus-redis/tests/conformance.rs`.
//!
//! Every rule builds its buses with a namespace of its own, so rules can share one server and run
//! in parallel. No rule sleeps to wait for a delivery: each waits for a condition (a handler
//! call, a counter, a drained consumer group) with a timeout of [`PATIENCE`]. Only the lease
//! rule holds a handler for a while on purpose: a slow handler is what it is about.
//!
//! The rules, by area:
//!
//! * [`pubsub`], ephemeral events: fan-out, at most once, patterns, templates, slow
//!   subscribers, payloads of other producers;
//! * [`streams`], durable events: groups, competing instances, broadcast, concurrency, order,
//!   acks, claims, leases, where a new group starts, entries of other producers;
//! * [`failures`], failed deliveries: retries, dead letters, panics, undecodable and oversized
//!   payloads;
//! * [`dead_letters`], what happens after: replay, and the `dedup` guard;
//! * [`requests`], request/reply: replies, errors, no responders, timeouts;
//! * [`publishing`], around a handler: its context, follow-ups, batches, namespaces, shutdown.

mod events;
mod support;

pub mod dead_letters;
pub mod failures;
pub mod publishing;
pub mod pubsub;
pub mod requests;
pub mod streams;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

pub use self::support::PATIENCE;
use crate::error::Result;
use crate::inspect::GroupInfo;
use crate::memory::MemoryTransport;
use crate::{Bus, BusBuilder};

/// A backend under test: makes buses that share one store (one Redis server), and does what the
/// rules need besides a bus: write messages as a producer that does not use eventbus would, and
/// show consumer groups.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A short name for failure messages (`memory`, `redis`).
    fn name(&self) -> &str;

    /// A bus from `builder` (namespace and settings chosen by the rule) on a new connection to
    /// the shared backend: each call is another service instance.
    async fn bus(&self, builder: BusBuilder) -> Result<Bus>;

    /// Adds an entry with exactly these fields to `stream` (`XADD stream * field value ...`) and
    /// returns its entry id.
    async fn add_entry(&self, stream: &str, fields: &[(&str, &[u8])]) -> Result<String>;

    /// Publishes `payload` on `channel` exactly as it is (`PUBLISH`) and returns how many
    /// subscribers received it.
    async fn publish_raw(&self, channel: &str, payload: &[u8]) -> Result<u64>;

    /// The consumer groups of `stream` (`XINFO GROUPS`), empty when it does not exist.
    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>>;
}

/// The in-memory transport as a [`Backend`]: every bus is a clone of one [`MemoryTransport`].
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    store: MemoryTransport,
}

impl MemoryBackend {
    /// A backend on a new, empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }

    async fn bus(&self, builder: BusBuilder) -> Result<Bus> {
        builder.transport(self.store.clone()).build()
    }

    async fn add_entry(&self, stream: &str, fields: &[(&str, &[u8])]) -> Result<String> {
        let fields = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Bytes::copy_from_slice(v)))
            .collect();
        Ok(self.store.add_entry(stream, fields))
    }

    async fn publish_raw(&self, channel: &str, payload: &[u8]) -> Result<u64> {
        Ok(self
            .store
            .publish_raw(channel, Bytes::copy_from_slice(payload)))
    }

    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        Ok(self.store.groups(stream))
    }
}

/// One rule of the suite.
#[derive(Clone, Copy)]
pub struct Rule {
    /// Its area: the module it is in.
    pub area: &'static str,
    /// Its name, which says what it checks.
    pub name: &'static str,
    /// Runs it on a backend; panics when the backend breaks the rule.
    pub run: for<'a> fn(&'a dyn Backend) -> BoxFuture<'a, ()>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.area, self.name)
    }
}

/// Every rule of the suite, in the order [`run_all`] runs them.
pub const RULES: &[Rule] = crate::__conformance_rules!(list []);

/// Runs every rule on `backend`, one after the other, and returns how long each took. Panics
/// at the first rule the backend breaks, naming it. [`conformance_tests!`](crate::conformance_tests)
/// runs them as separate tests instead, in parallel.
pub async fn run_all(backend: &dyn Backend) -> Vec<(Rule, Duration)> {
    let mut timings = Vec::with_capacity(RULES.len());
    for rule in RULES {
        let started = Instant::now();
        if let Err(panic) = AssertUnwindSafe((rule.run)(backend)).catch_unwind().await {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "the {} backend breaks rule {rule:?}: {message}",
                backend.name()
            );
        }
        timings.push((*rule, started.elapsed()));
    }
    timings
}

/// Defines one `#[tokio::test]` per rule of the suite, each running it on a backend of its own:
/// `$backend` is evaluated in each test (it may `.await`). The test crate needs `tokio` with its
/// `macros` and `rt-multi-thread` features.
///
/// ```ignore
/// eventbus_core::conformance_tests!(eventbus_core::conformance::MemoryBackend::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::__conformance_rules!(tests[$backend]);
    };
}

/// The list of rules, written once: expanded into tests by `conformance_tests!` and into
/// [`RULES`]. Not a public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_rules {
    ($mode:ident [$($arg:tt)*]) => {
        $crate::__conformance_rules! { @$mode [$($arg)*]
            pubsub::an_ephemeral_event_reaches_every_subscriber_of_every_instance,
            pubsub::an_ephemeral_event_is_not_kept_for_subscribers_that_are_not_there,
            pubsub::a_pattern_subscription_gets_every_matching_channel_with_its_name,
            pubsub::a_templated_channel_is_filled_from_the_event_and_matched_by_its_pattern,
            pubsub::a_slow_subscriber_drops_its_oldest_messages_and_counts_them,
            pubsub::a_slow_subscriber_buffers_no_more_than_its_byte_limit,
            pubsub::a_bare_json_payload_on_a_channel_is_accepted,
            streams::events_published_before_a_group_existed_are_handled,
            streams::a_new_group_can_start_from_now,
            streams::every_group_gets_every_durable_event,
            streams::instances_of_one_group_share_the_work_and_each_entry_is_handled_once,
            streams::a_broadcast_handler_sees_every_later_event_on_every_instance,
            streams::concurrency_bounds_the_calls_in_flight,
            streams::concurrency_one_handles_entries_in_order,
            streams::an_entry_is_acked_only_after_its_handler_succeeded,
            streams::entries_of_a_dead_consumer_are_claimed_after_claim_idle,
            streams::a_dead_consumers_entry_is_claimed_soon_after_claim_idle,
            streams::a_restarted_instance_gets_its_own_pending_entries_at_once,
            streams::a_slow_handler_keeps_its_entry_from_other_consumers,
            streams::a_bare_payload_in_a_stream_entry_is_accepted,
            streams::a_binary_mode_stream_entry_is_accepted,
            failures::a_failed_delivery_is_retried_until_it_succeeds,
            failures::a_poison_message_is_dead_lettered_after_max_deliveries_with_the_reason,
            failures::a_permanent_error_skips_the_retries,
            failures::a_panicking_handler_is_a_failed_delivery_and_the_next_event_is_handled,
            failures::a_panic_before_the_first_await_is_a_failed_delivery,
            failures::an_undecodable_payload_is_dead_lettered_at_once,
            failures::an_entry_delivered_more_than_max_deliveries_is_dead_lettered_without_a_call,
            failures::an_ephemeral_handler_failure_is_retried_then_dead_lettered,
            failures::an_oversized_payload_is_refused_on_publish_and_dead_lettered_on_receive,
            dead_letters::a_replayed_dead_letter_is_handled_again_under_its_event_id,
            dead_letters::an_ephemeral_dead_letter_is_replayed_on_its_channel,
            dead_letters::a_replayed_bare_stream_entry_is_named_by_its_new_entry,
            dead_letters::a_dead_letter_is_replayed_once,
            dead_letters::a_dedup_group_skips_an_event_published_again_under_its_id,
            dead_letters::a_dedup_group_runs_again_what_failed,
            dead_letters::a_replayed_dead_letter_is_skipped_by_the_dedup_groups_that_handled_it,
            requests::a_request_gets_the_typed_reply_of_its_handler,
            requests::concurrent_requests_get_their_own_replies,
            requests::a_failing_request_handler_answers_with_its_error,
            requests::a_request_nobody_subscribes_to_fails_with_no_responders,
            requests::a_request_without_a_reply_in_time_times_out,
            requests::a_durable_request_is_answered_by_a_consumer_group,
            publishing::the_context_carries_the_attributes_of_the_event,
            publishing::a_follow_up_carries_the_correlation_and_causation_of_its_cause,
            publishing::publish_all_delivers_a_batch_in_order,
            publishing::namespaces_isolate_buses_on_one_backend,
            publishing::shutdown_lets_in_flight_calls_finish_and_acks_them,
            publishing::a_handler_finishing_during_shutdown_can_still_publish,
            publishing::a_call_running_past_shutdown_timeout_is_abandoned_to_the_next_instance,
            publishing::a_stopped_consumer_leaves_its_group_unless_it_owns_pending_entries,
        }
    };
    (@tests [$backend:expr] $($area:ident :: $rule:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                let backend = $backend;
                $crate::conformance::$area::$rule(&backend).await;
            }
        )*
    };
    (@list [] $($area:ident :: $rule:ident),* $(,)?) => {
        &[$(
            $crate::conformance::Rule {
                area: ::core::stringify!($area),
                name: ::core::stringify!($rule),
                run: |backend| ::std::boxed::Box::pin($crate::conformance::$area::$rule(backend)),
            }
        ),*]
    };
}
