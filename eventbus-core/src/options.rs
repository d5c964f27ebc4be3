//! [`HandlerOptions`]: how a handler is run, and the rules its options must follow for the
//! event they are used with.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::event::{Durability, EventDescriptor};
use crate::transport::ConsumeMode;

/// How a handler is run: consumer group, concurrency, retries, broadcast, dedup.
///
/// Each field has a builder method and a `#[handler(...)]` attribute of the same name; an
/// attribute that takes a number of seconds or milliseconds carries the unit as a suffix:
///
/// | field | method | `#[handler]` attribute | default |
/// |---|---|---|---|
/// | `group` | [`group`](Self::group) | `group = "billing"` | the handler's path |
/// | `concurrency` | [`concurrency`](Self::concurrency) | `concurrency = 8` | 1 |
/// | `max_deliveries` | [`max_deliveries`](Self::max_deliveries) | `max_deliveries = 5` | 5 |
/// | `backoff` | [`backoff`](Self::backoff) | `backoff_ms = 100` | 100 ms |
/// | `backoff_max` | [`backoff_max`](Self::backoff_max) | `backoff_max_ms = 10000` | 10 s |
/// | `mode` | [`broadcast`](Self::broadcast) | `broadcast` | [`ConsumeMode::Group`] |
/// | `dedup` | [`dedup`](Self::dedup) | `dedup`, `dedup_ttl_secs = 3600` | off (`dedup` alone: 24 h) |
///
/// ```
/// use std::time::Duration;
/// use eventbus_core::HandlerOptions;
///
/// // What `#[handler(group = "billing", concurrency = 8, backoff_ms = 50)]` gives:
/// let options = HandlerOptions::new()
///     .group("billing")
///     .concurrency(8)
///     .backoff(Duration::from_millis(50));
/// assert_eq!(options.backoff_for(2), Duration::from_millis(100));
/// ```
///
/// `broadcast` and `dedup` apply to durable events only, and not together:
/// [`Bus::subscribe_with`](crate::Bus::subscribe_with) refuses them with
/// [`Error::InvalidOptions`](crate::Error::InvalidOptions), and `#[handler]` does not compile
/// with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerOptions {
    /// Consumer group for durable events (default: the handler's own path, so two handlers never
    /// steal each other's events while two instances of one handler share the work). Ignored
    /// for ephemeral events, where every subscriber gets every message.
    pub group: Option<&'static str>,
    /// Maximum handler calls in flight at once (default 1: in order).
    pub concurrency: usize,
    /// Deliveries tried before the message is dead-lettered (default 5).
    pub max_deliveries: u32,
    /// Delay before the first retry; doubled for each further one (default 100 ms).
    pub backoff: Duration,
    /// Upper bound of the retry delay (default 10 s).
    pub backoff_max: Duration,
    /// Group (competing consumers) or broadcast (every instance of a durable handler sees
    /// every event).
    pub mode: ConsumeMode,
    /// The idempotency guard of durable events: `Some(ttl)` skips deliveries of event ids this
    /// handler's group already handled, remembered for `ttl`; `None` (the default) calls the
    /// handler on every delivery. See [`HandlerOptions::dedup`].
    pub dedup: Option<Duration>,
}

impl HandlerOptions {
    /// The defaults, usable in `const` context.
    pub const DEFAULT: HandlerOptions = HandlerOptions {
        group: None,
        concurrency: 1,
        max_deliveries: 5,
        backoff: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        mode: ConsumeMode::Group,
        dedup: None,
    };

    /// How long `#[handler(dedup)]` remembers a handled event id: 24 hours.
    pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(86_400);

    /// The defaults.
    pub const fn new() -> Self {
        Self::DEFAULT
    }

    /// Sets the consumer group.
    pub const fn group(mut self, group: &'static str) -> Self {
        self.group = Some(group);
        self
    }

    /// Sets the concurrency limit (at least 1).
    pub const fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = if n == 0 { 1 } else { n };
        self
    }

    /// Sets the number of deliveries before dead-lettering (at least 1).
    pub const fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = if n == 0 { 1 } else { n };
        self
    }

    /// Sets the first retry delay.
    pub const fn backoff(mut self, delay: Duration) -> Self {
        self.backoff = delay;
        self
    }

    /// Sets the retry delay bound.
    pub const fn backoff_max(mut self, max: Duration) -> Self {
        self.backoff_max = max;
        self
    }

    /// Every instance handles every event of a durable type: the handler reads the stream from
    /// its own position (`XREAD`) instead of sharing a consumer group. Not for ephemeral events,
    /// which pub/sub already delivers to every live subscriber; not with [`dedup`](Self::dedup) or
    /// [`group`](Self::group) (refused with [`Error::InvalidOptions`](crate::Error::InvalidOptions)).
    pub const fn broadcast(mut self) -> Self {
        self.mode = ConsumeMode::Broadcast;
        self
    }

    /// Turns on the idempotency guard: a delivery of an event id that this handler's group
    /// handled successfully within the last `ttl` is acked without calling the handler (and
    /// counted in [`StatsSnapshot::duplicates_skipped`](crate::StatsSnapshot::duplicates_skipped)).
    /// `#[handler(dedup)]` is `.dedup(HandlerOptions::DEFAULT_DEDUP_TTL)` (24 h),
    /// `#[handler(dedup, dedup_ttl_secs = 3600)]` is `.dedup(Duration::from_secs(3600))`. A
    /// `ttl` below one millisecond is raised to one.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use eventbus_core::HandlerOptions;
    /// let options = HandlerOptions::new().group("billing").dedup(Duration::from_secs(3600));
    /// assert_eq!(options.dedup, Some(Duration::from_secs(3600)));
    /// ```
    ///
    /// Durable delivery is at least once: when a consumer dies after its handler succeeded but
    /// before the ack reached Redis, the consumer that claims the entry handles it again. With
    /// `dedup`, for every stream delivery the dispatcher
    ///
    /// 1. checks whether the group marked the event id (Redis: `EXISTS`); if it did, the handler
    ///    is not called and the entry is acked;
    /// 2. after the handler succeeded, marks the id (Redis: `SET <key> 1 PX <ttl>`), then acks;
    /// 3. marks nothing after a failed call, so retries and redeliveries run the handler again.
    ///
    /// The mark is the key `<namespace.>eventbus.dedup:<channel>:<group>:<event id>`; the memory
    /// transport keeps the same keys in a map shared by its clones, with the same expiry. The
    /// event id is the CloudEvents `id`. A message without one (a bare payload from a foreign
    /// producer) is recognised by its stream entry id instead: a redelivery of that entry is
    /// skipped, the same payload added again as a new entry is not.
    ///
    /// What it does not cover:
    ///
    /// * a crash after the handler's effects and before the mark is written: the event is
    ///   handled again (the guard narrows the window from "until the ack" to "until the mark",
    ///   it does not close it). For effects that must happen once, make them idempotent
    ///   themselves (a unique key in the same database transaction);
    /// * two calls at the same time: the check is not a lock, so the same event id delivered
    ///   to two consumers at once (published twice, or claimed from a consumer that still runs
    ///   it) runs twice;
    /// * marks older than `ttl`: choose it longer than an entry can stay pending (consumer
    ///   outages, `claim_idle`) and than a dead letter waits for its replay;
    /// * a transport that fails: when the check fails the handler is called (at least once
    ///   still holds), when the mark fails the entry is acked anyway; both are logged.
    ///
    /// A replayed dead letter keeps its event id: groups that handled it already skip it.
    ///
    /// Cost: two more round trips per delivery, and one key per handled event for `ttl`
    /// (at 1,000 events/s, a 24 h `ttl` keeps 86.4 million keys: size it to your rate).
    ///
    /// Only for durable events read by a consumer group: on an ephemeral event or together with
    /// [`broadcast`](Self::broadcast), `#[handler]` fails to compile and
    /// [`Bus::subscribe_with`](crate::Bus::subscribe_with) returns
    /// [`Error::InvalidOptions`](crate::Error::InvalidOptions).
    pub const fn dedup(mut self, ttl: Duration) -> Self {
        self.dedup = Some(if ttl.as_millis() == 0 {
            Duration::from_millis(1)
        } else {
            ttl
        });
        self
    }

    /// The delay before delivery number `attempt + 1` after `attempt` failed ones.
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Refuses options that make no sense for `event`, before the handler starts: `broadcast` and
/// `dedup` on an ephemeral event (pub/sub already reaches every live subscriber, and never
/// redelivers), and `dedup` or `group` on a `broadcast` handler (it reads without a group).
/// `#[handler]` makes the same checks at compile time.
pub(crate) fn check(
    handler: &str,
    event: &EventDescriptor,
    options: &HandlerOptions,
) -> Result<()> {
    let broadcast = options.mode == ConsumeMode::Broadcast;
    let refuse = |reason: String| {
        Err(Error::InvalidOptions {
            handler: handler.to_owned(),
            reason,
        })
    };
    let ephemeral = |option: &str, why: &str| {
        format!(
            "`{option}` needs a durable event, and {} ({}) is ephemeral: {why}; drop `{option}`",
            event.rust_type, event.name
        )
    };
    if event.durability == Durability::Ephemeral {
        if options.dedup.is_some() {
            return refuse(ephemeral(
                "dedup",
                "pub/sub delivers at most once and never redelivers",
            ));
        }
        if broadcast {
            return refuse(ephemeral(
                "broadcast",
                "pub/sub already delivers every message to every live subscriber",
            ));
        }
    }
    if options.dedup.is_some() && broadcast {
        return refuse(
            "`dedup` remembers what a consumer group handled, and a `broadcast` handler has no \
             group; drop `dedup` or `broadcast`"
                .to_owned(),
        );
    }
    if let (Some(group), true) = (options.group, broadcast) {
        return refuse(format!(
            "`group = \"{group}\"`: a `broadcast` handler reads the stream on its own, without a \
             consumer group; drop `group` or `broadcast`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let o = HandlerOptions::new()
            .backoff(Duration::from_millis(10))
            .backoff_max(Duration::from_millis(50));
        assert_eq!(o.backoff_for(1), Duration::from_millis(10));
        assert_eq!(o.backoff_for(2), Duration::from_millis(20));
        assert_eq!(o.backoff_for(3), Duration::from_millis(40));
        assert_eq!(o.backoff_for(4), Duration::from_millis(50));
        assert_eq!(o.backoff_for(40), Duration::from_millis(50));
    }

    #[test]
    fn dedup_and_broadcast_need_a_durable_event_and_exclude_each_other() {
        let durable = descriptor(Durability::Durable);
        let ephemeral = descriptor(Durability::Ephemeral);
        let dedup = HandlerOptions::new().dedup(Duration::from_secs(1));
        let broadcast = HandlerOptions::new().broadcast();
        assert!(check("h", &durable, &dedup).is_ok());
        assert!(check("h", &durable, &broadcast).is_ok());
        assert!(check("h", &ephemeral, &HandlerOptions::new()).is_ok());
        let refused = |event: &EventDescriptor, options: HandlerOptions| {
            check("h", event, &options).unwrap_err().to_string()
        };
        let e = refused(&ephemeral, dedup);
        assert!(e.contains("`dedup` needs a durable event"), "{e}");
        let e = refused(&ephemeral, broadcast);
        assert!(e.contains("`broadcast` needs a durable event"), "{e}");
        assert!(e.contains("shop::OrderCreated"), "{e}");
        let e = refused(&durable, dedup.broadcast());
        assert!(e.contains("`broadcast` handler has no group"), "{e}");
        let e = refused(&durable, HandlerOptions::new().group("billing").broadcast());
        assert!(e.contains("drop `group` or `broadcast`"), "{e}");
    }

    fn descriptor(durability: Durability) -> EventDescriptor {
        EventDescriptor {
            name: "shop.OrderCreated",
            channel: "shop.OrderCreated",
            pattern: "shop.OrderCreated",
            rust_type: "shop::OrderCreated",
            durability,
            version: 1,
            max_len: None,
            reply: None,
        }
    }
}
