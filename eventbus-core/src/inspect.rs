//! What a transport shows of its consumer groups, in one set of types for every transport: the
//! memory transport and the Redis one answer `XINFO GROUPS`, `XINFO CONSUMERS` and `XPENDING` with
//! these.

use std::time::Duration;

/// A consumer group of a stream, as `XINFO GROUPS` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group name (a handler group).
    pub name: String,
    /// Consumer names that ever read from the group.
    pub consumers: u64,
    /// Entries handed to a consumer and not acknowledged yet.
    pub pending: u64,
    /// The id of the last entry handed to a consumer of the group (`0-0` before the first).
    pub last_delivered_id: String,
    /// Entries still in the stream that no consumer of the group has been handed yet; `None`
    /// when the transport cannot tell (Redis, after deletions or trimming).
    pub lag: Option<u64>,
}

impl GroupInfo {
    /// True when the group has been handed every entry of its stream and acknowledged each
    /// one: nothing is left for it to do.
    pub fn is_drained(&self) -> bool {
        self.pending == 0 && self.lag == Some(0)
    }
}

/// A member of a consumer group, as `XINFO CONSUMERS` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer name (the bus instance name).
    pub name: String,
    /// Entries it was handed and did not acknowledge yet.
    pub pending: u64,
    /// Time since it last read or claimed entries.
    pub idle: Duration,
}

/// One entry of a group's pending entries list, as `XPENDING key group - + count` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInfo {
    /// The stream entry id.
    pub id: String,
    /// The consumer that holds it.
    pub consumer: String,
    /// How many times it was delivered.
    pub delivery_count: u32,
    /// Time since it was last delivered, or since its holder last renewed its lease on it.
    pub idle: Duration,
}
