//! Durable streams as Redis keeps them: an append-only log of entries per key, each with an id
//! `<ms>-<seq>`, consumer groups with a last-delivered id and a pending entries list (PEL), and
//! broadcast readers that only remember how far they have read.
//!
//! Everything here is plain data behind the transport's one stream lock; the consumers in
//! `consumer.rs` read and change it. The activity count (for `Bus::settle`) is kept in step with
//! one rule: every group holds one unit per entry it has not been handed yet plus one per entry
//! in its PEL, and every broadcast reader one unit per entry it has not read yet.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::activity::Activity;
use crate::transport::StartFrom;

/// The fields of one entry. Kept as `Cow` so that the attribute names of the codec, which are
/// `&'static str`, are not copied on every append.
pub(super) type Fields = Vec<(Cow<'static, str>, Bytes)>;

/// Copies the values of `fields` into one buffer. A stored entry is cloned into every delivery:
/// with one buffer that costs a reference count per value, instead of turning every value into
/// a shared allocation of its own on its first clone. Called before taking the stream lock.
pub(super) fn pack(fields: Fields) -> Fields {
    let total = fields.iter().map(|(_, v)| v.len()).sum();
    let mut buf = Vec::with_capacity(total);
    for (_, v) in &fields {
        buf.extend_from_slice(v);
    }
    let buf = Bytes::from(buf);
    let mut at = 0;
    fields
        .into_iter()
        .map(|(k, v)| {
            let value = buf.slice(at..at + v.len());
            at += v.len();
            (k, value)
        })
        .collect()
}

/// A stream entry id, ordered like Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct EntryId {
    pub(super) ms: u64,
    pub(super) seq: u64,
}

impl EntryId {
    /// Parses `<ms>-<seq>`, or `<ms>` alone (sequence 0), as Redis accepts them.
    pub(super) fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The next id after `last`: the wall clock in ms, or `last` plus one in its sequence when
    /// the clock has not moved on (or went backwards), so ids never decrease.
    fn next_after(last: EntryId) -> EntryId {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if now_ms > last.ms {
            EntryId { ms: now_ms, seq: 0 }
        } else {
            EntryId {
                ms: last.ms,
                seq: last.seq + 1,
            }
        }
    }
}

impl EntryId {
    /// `<ms>-<seq>`. Written by hand: two ids are formatted per message (the receipt and the
    /// delivery), and `format!` showed up in profiles.
    pub(super) fn text(self) -> String {
        // u64::MAX has 20 digits: 20 + 1 + 20 bytes.
        let mut buf = [0u8; 41];
        let mut at = buf.len();
        for (i, mut n) in [self.seq, self.ms].into_iter().enumerate() {
            if i == 1 {
                at -= 1;
                buf[at] = b'-';
            }
            loop {
                at -= 1;
                buf[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
        }
        std::str::from_utf8(&buf[at..]).map_or_else(|_| String::new(), str::to_owned)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// One stream entry.
pub(super) struct Entry {
    pub(super) id: EntryId,
    pub(super) fields: Fields,
}

impl Entry {
    /// The fields with owned names, as `WireBody::Fields` and the introspection API want them.
    pub(super) fn owned_fields(&self) -> Vec<(String, Bytes)> {
        self.fields
            .iter()
            .map(|(k, v)| (String::from(&**k), v.clone()))
            .collect()
    }
}

/// An entry handed to a group member and not acknowledged yet.
pub(super) struct Pending {
    /// Index into `Group::consumers`.
    pub(super) consumer: u32,
    /// When it was last delivered (or its lease ended): its idle time counts from here.
    pub(super) delivered_at: Instant,
    pub(super) delivery_count: u32,
    /// Set while a live consumer holds it in flight (handed to its dispatcher, not acked).
    pub(super) lease: Option<Lease>,
}

/// A consumer's hold on an entry it is handling. Redis cannot tell a slow handler from a dead
/// consumer, so the Redis transport renews the idle time of its in-flight entries; the lease is
/// that renewal here: while it holds, the entry never looks idle, and other consumers do not
/// claim it. Like a renewal, it ends: when its consumer is dropped (a crash) or its connection
/// closed, and at the latest at `until`, so an entry kept without an ack is delivered again.
#[derive(Clone, Copy)]
pub(super) struct Lease {
    /// The consumer object (not the consumer name) holding it.
    pub(super) holder: u64,
    /// That consumer's connection.
    pub(super) conn: u64,
    /// When the lease ends by itself.
    pub(super) until: Instant,
}

impl Pending {
    /// The moment its idle time counts from: now while leased, the end of its lease once that
    /// passed, else its last delivery.
    pub(super) fn last_active(&self, now: Instant) -> Instant {
        match self.lease {
            Some(lease) => lease.until.min(now),
            None => self.delivered_at,
        }
    }

    /// True while a live consumer other than `holder` holds it.
    pub(super) fn leased_by_other(&self, holder: u64, now: Instant) -> bool {
        self.lease
            .is_some_and(|l| l.holder != holder && now < l.until)
    }

    /// Ends the lease (its holder is gone): the entry idles from now on.
    pub(super) fn release(&mut self, now: Instant) {
        if self.lease.is_some() {
            self.delivered_at = self.last_active(now);
            self.lease = None;
        }
    }
}

/// A consumer group (`XGROUP CREATE`).
pub(super) struct Group {
    pub(super) name: String,
    /// Entries up to this id were handed to some member.
    pub(super) last_delivered: EntryId,
    pub(super) pel: BTreeMap<EntryId, Pending>,
    /// Consumer names seen in this group; the PEL refers to them by index. Never shrinks, so an
    /// index stays valid for the life of the group (Redis keeps consumers until DELCONSUMER).
    pub(super) consumers: Vec<String>,
    /// When each consumer last read or claimed entries, by the same index.
    pub(super) last_seen: Vec<Instant>,
    /// Whether each consumer is a member, by the same index: one that left its group
    /// (`XGROUP DELCONSUMER`) keeps its index, unlisted, until it reads again.
    pub(super) member: Vec<bool>,
}

impl Group {
    /// The index of consumer `name`, added when new.
    pub(super) fn consumer_index(&mut self, name: &str) -> u32 {
        match self.consumers.iter().position(|c| c == name) {
            Some(i) => {
                self.member[i] = true;
                i as u32
            }
            None => {
                self.consumers.push(name.to_owned());
                self.last_seen.push(Instant::now());
                self.member.push(true);
                (self.consumers.len() - 1) as u32
            }
        }
    }

    /// Consumer `index` leaves the group if it owns no pending entry (like the script behind
    /// Redis's `XGROUP DELCONSUMER`); true when it left.
    pub(super) fn leave(&mut self, index: u32) -> bool {
        if self.pel.values().any(|p| p.consumer == index) {
            return false;
        }
        self.member[index as usize] = false;
        true
    }

    /// Ends every lease that `ends` selects: their entries start to idle now.
    pub(super) fn release_leases(&mut self, ends: impl Fn(&Lease) -> bool, now: Instant) {
        for p in self.pel.values_mut() {
            if p.lease.as_ref().is_some_and(&ends) {
                p.release(now);
            }
        }
    }
}

/// A broadcast reader (`XREAD` from its own position).
pub(super) struct BroadcastReader {
    pub(super) id: u64,
    /// The connection (transport handle) that opened it; closing the handle removes it.
    pub(super) conn: u64,
    pub(super) last: EntryId,
}

/// One stream key.
pub(super) struct Stream {
    pub(super) entries: VecDeque<Entry>,
    /// The highest id ever added, even if trimmed since (new ids must exceed it).
    pub(super) last_id: EntryId,
    /// Groups in creation order; never removed, so a consumer can keep an index.
    pub(super) groups: Vec<Group>,
    pub(super) readers: Vec<BroadcastReader>,
    /// Wakes consumers waiting for entries.
    pub(super) notify: Arc<Notify>,
    /// Set by a consumer about to wait, so that appends only notify when someone listens.
    pub(super) has_waiters: bool,
}

impl Stream {
    fn new() -> Self {
        Stream {
            entries: VecDeque::new(),
            last_id: EntryId::default(),
            groups: Vec::new(),
            readers: Vec::new(),
            notify: Arc::new(Notify::new()),
            has_waiters: false,
        }
    }

    /// `XADD key [MAXLEN n] * fields...`: appends, counts one unit of work per group and reader,
    /// trims and wakes waiting consumers.
    pub(super) fn append(
        &mut self,
        fields: Fields,
        max_len: Option<u64>,
        activity: &Activity,
    ) -> EntryId {
        let id = EntryId::next_after(self.last_id);
        self.last_id = id;
        self.entries.push_back(Entry { id, fields });
        activity.add(self.groups.len() + self.readers.len());
        if let Some(max) = max_len {
            self.trim(usize::try_from(max).unwrap_or(usize::MAX), activity);
        }
        self.wake();
        id
    }

    /// Drops the oldest entries until at most `max_len` are left (exact, not `~`).
    pub(super) fn trim(&mut self, max_len: usize, activity: &Activity) {
        while self.entries.len() > max_len {
            if let Some(entry) = self.entries.pop_front() {
                activity.sub(self.unread_by(entry.id));
            }
        }
    }

    /// `XDEL`: removes one entry, releasing the work counted for whoever had not read it.
    pub(super) fn delete(&mut self, id: EntryId, activity: &Activity) -> Option<Entry> {
        let at = self.entries.binary_search_by(|e| e.id.cmp(&id)).ok()?;
        let entry = self.entries.remove(at)?;
        activity.sub(self.unread_by(id));
        Some(entry)
    }

    /// How many groups and readers have not been handed entry `id` yet. Entries in a PEL are not
    /// counted: their unit is released when they are acked or found gone.
    fn unread_by(&self, id: EntryId) -> usize {
        let groups = self.groups.iter().filter(|g| id > g.last_delivered);
        let readers = self.readers.iter().filter(|r| id > r.last);
        groups.count() + readers.count()
    }

    /// Wakes consumers waiting in `fetch`, if any.
    pub(super) fn wake(&mut self) {
        if self.has_waiters {
            self.has_waiters = false;
            self.notify.notify_waiters();
        }
    }

    /// Entries after `id` still in the stream.
    pub(super) fn count_after(&self, id: EntryId) -> usize {
        self.entries.len() - position_after(&self.entries, id)
    }

    /// `XGROUP CREATE key group 0|$ MKSTREAM`; an existing group is kept as it is (`BUSYGROUP`).
    /// Returns the group's index.
    pub(super) fn create_group(
        &mut self,
        name: &str,
        start: StartFrom,
        activity: &Activity,
    ) -> usize {
        if let Some(i) = self.groups.iter().position(|g| g.name == name) {
            return i;
        }
        let last_delivered = match start {
            StartFrom::Beginning => EntryId::default(),
            StartFrom::Now => self.last_id,
        };
        activity.add(self.count_after(last_delivered));
        self.groups.push(Group {
            name: name.to_owned(),
            last_delivered,
            pel: BTreeMap::new(),
            consumers: Vec::new(),
            last_seen: Vec::new(),
            member: Vec::new(),
        });
        self.groups.len() - 1
    }

    /// Adds a broadcast reader positioned at the end of the stream (`$`).
    pub(super) fn add_reader(&mut self, id: u64, conn: u64) {
        self.readers.push(BroadcastReader {
            id,
            conn,
            last: self.last_id,
        });
    }

    /// Removes broadcast readers, releasing the work counted for what they had not read.
    pub(super) fn remove_readers(
        &mut self,
        remove: impl Fn(&BroadcastReader) -> bool,
        activity: &Activity,
    ) {
        let mut released = 0;
        let entries = &self.entries;
        self.readers.retain(|r| {
            if remove(r) {
                released += entries.len() - position_after(entries, r.last);
                false
            } else {
                true
            }
        });
        activity.sub(released);
    }
}

/// The entry with this id, if it is still in the stream.
pub(super) fn find(entries: &VecDeque<Entry>, id: EntryId) -> Option<&Entry> {
    let at = entries.binary_search_by(|e| e.id.cmp(&id)).ok()?;
    entries.get(at)
}

/// The position of the first entry after `id`.
///
/// Readers are almost always near the end of the stream (they wait for new entries), so the
/// search gallops back from the end: O(log k) for k unread entries, touching only recent
/// entries, where a plain binary search would walk cold memory in a long stream.
pub(super) fn position_after(entries: &VecDeque<Entry>, id: EntryId) -> usize {
    // Invariant: every entry at `hi..` is after `id`.
    let mut hi = entries.len();
    let mut step = 1;
    while hi > 0 {
        let probe = hi.saturating_sub(step);
        if entries[probe].id <= id {
            // The answer is in `probe + 1..=hi`.
            let mut lo = probe + 1;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if entries[mid].id <= id {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            return lo;
        }
        hi = probe;
        step *= 2;
    }
    0
}

/// Every stream of the transport, by key.
#[derive(Default)]
pub(super) struct Streams {
    map: HashMap<String, Stream>,
}

impl Streams {
    /// The stream at `key`, created empty when missing (like `MKSTREAM` or the first `XADD`).
    pub(super) fn get_or_create(&mut self, key: &str) -> &mut Stream {
        // Two lookups on the rare miss instead of a `String` allocation on every call.
        if !self.map.contains_key(key) {
            self.map.insert(key.to_owned(), Stream::new());
        }
        self.map.get_mut(key).expect("inserted above")
    }

    /// Consumer group `group` of stream `key`, when both exist.
    pub(super) fn group(&self, key: &str, group: &str) -> Option<&Group> {
        self.get(key)?.groups.iter().find(|g| g.name == group)
    }

    /// The stream at `key`, if it exists.
    pub(super) fn get(&self, key: &str) -> Option<&Stream> {
        self.map.get(key)
    }

    /// The stream at `key`, if it exists.
    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Stream> {
        self.map.get_mut(key)
    }

    /// Every stream.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Stream> {
        self.map.values_mut()
    }

    /// Every stream key, sorted.
    pub(super) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.map.keys().cloned().collect();
        keys.sort();
        keys
    }
}
