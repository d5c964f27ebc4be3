//! The name a bus's consumers use in their consumer groups, and the lease that keeps two live
//! processes from using the same one.
//!
//! **Why a stable name.** Redis keeps the entries a consumer read and did not acknowledge in its
//! group's pending list, under the consumer's name. An instance restarted under the same name
//! reads them again first: at once and in stream order. Under a new name they wait until another
//! consumer claims them after `claim_idle`, and come after newer entries; every restart also
//! leaves one more consumer in every group. So the default base name is `<host>-<binary>`
//! ([`default_instance`]), the same at every start of a program on a host;
//! `Bus::builder().instance(..)` sets another one (a pod name).
//!
//! **Why a lease.** Two live processes under one name would share one pending list: each would
//! take the other's unacknowledged entries for its own after a reconnect, and a group could not
//! tell them apart. So before its first consumer group starts, a bus takes a lease on its name
//! (`<namespace.>eventbus.instance:<name>`, see [`Transport::hold_lease`]) for
//! `BusConfig::consumer_lease_ttl` ([`LEASE_TTL`] by default), renews it every tenth of that
//! and releases it at the end of a graceful shutdown, after its last ack. The
//! lease's value says who holds it (`Holder`). A bus looks at `base`, `base-2`, `base-3`, … and
//! takes
//!
//! * a name held by a holder known to be dead: a process of the same machine, user and pid
//!   namespace that is gone (its pid is unused, or used by a process started at another time),
//!   or a bus of this process that no longer holds it. A crashed instance restarted on its host
//!   takes its name back at once, with the pending entries under it; such a name wins over a
//!   free one, so the scan goes on past the first free name until a second one;
//! * otherwise the first name that is free (or held by itself), or whose holder it cannot check
//!   (another machine or container) and does not renew its lease: the bus waits until the lease
//!   expires (the server says when). A live holder renews it before, and the bus moves on to the
//!   next name.
//!
//! A crashed instance whose lease expired before it was restarted finds its name free: if it
//! was `base`, the restart re-reads its entries as before; under another name (`base-2`, a
//! second copy) they wait for a claim after `claim_idle`.
//!
//! A transport that cannot hold leases (the default of [`Transport::hold_lease`]) gets a name
//! unique to the process instead, as does a bus whose lease request fails (an ACL that forbids
//! the key): stable names need the lease.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::transport::{LeaseState, Transport};

/// How long a lease lasts unless renewed, by default (`BusConfig::consumer_lease_ttl`): the
/// longest a restarted instance waits for the lease of a predecessor it cannot check (another
/// machine or container).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// The shortest lease: renewals every 100 ms.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// How many renewals a lease gets within its ttl.
const RENEWALS_PER_TTL: u32 = 10;
/// How often a lease is read while waiting for it.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// A lease that expires later than expected by more than this was renewed.
const RENEWAL_MARGIN: Duration = Duration::from_millis(100);
/// Names tried before falling back to a name unique to the process: `base`, `base-2`, …
const MAX_CANDIDATES: usize = 64;

/// The default instance name: `<host>-<binary>`, with every character other than an ASCII
/// letter, digit or `-` replaced by `-`. The same at every start of a program on a host, so a
/// restarted instance finds its pending entries again.
pub fn default_instance() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "eventbus".to_owned());
    format!("{}-{}", sanitize(&process().host), sanitize(&binary))
}

/// `base-<pid>-<n>`: a name no other bus uses, for reply channels and for buses without a lease.
pub(crate) fn process_unique(base: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(1);
    format!(
        "{base}-{}-{}",
        process().pid,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn sanitize(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_owned()
    } else {
        clean
    }
}

/// What identifies this process, read once.
struct Process {
    host: String,
    /// `/proc/sys/kernel/random/boot_id`: tells machines (and boots) apart.
    boot: String,
    /// The pid namespace (`/proc/self/ns/pid`): pids of other namespaces mean nothing here.
    pidns: String,
    uid: String,
    pid: u32,
    /// Start time of the process since boot, in clock ticks (`/proc/<pid>/stat`, field 22):
    /// tells a process from a later one that got the same pid.
    start: String,
}

fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let host = Some(read("/proc/sys/kernel/hostname"))
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let pid = std::process::id();
        Process {
            host,
            boot: read("/proc/sys/kernel/random/boot_id"),
            pidns: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            uid: uid_of("self").unwrap_or_default(),
            start: start_of(&pid.to_string())
                .ok()
                .flatten()
                .unwrap_or_default(),
            pid,
        }
    })
}

/// The start time of process `pid`; `Ok(None)` when there is no such process, or only its
/// exit status waits to be collected (a zombie).
fn start_of(pid: &str) -> std::io::Result<Option<String>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may hold spaces and parentheses: count
    // from the last `)`. Field 22 is the 20th after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    match (fields.first(), fields.get(19)) {
        (Some(&("Z" | "X" | "x")), _) => Ok(None),
        (Some(_), Some(start)) => Ok(Some((*start).to_owned())),
        _ => Err(std::io::Error::other("unexpected /proc stat format")),
    }
}

fn uid_of(pid: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// The buses of this process that hold a lease, by nonce: a lease of this process whose nonce
/// is not here belongs to a bus that is gone.
fn live_nonces() -> std::sync::MutexGuard<'static, HashSet<String>> {
    static LIVE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The value of a lease: which bus of which process on which machine holds it.
/// Written as `eventbus host=… boot=… pidns=… uid=… pid=… start=… nonce=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    host: String,
    boot: String,
    pidns: String,
    uid: String,
    pid: u32,
    start: String,
    nonce: String,
}

/// What a starting bus can tell about the holder of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Alive,
    Dead,
    /// Another machine, container or user, or a value it cannot read: only the lease's renewals
    /// tell.
    Unknown,
}

impl Holder {
    /// A holder for a new bus of this process.
    fn new() -> Holder {
        let p = process();
        Holder {
            host: p.host.clone(),
            boot: p.boot.clone(),
            pidns: p.pidns.clone(),
            uid: p.uid.clone(),
            pid: p.pid,
            start: p.start.clone(),
            nonce: uuid::Uuid::now_v7().simple().to_string(),
        }
    }

    fn value(&self) -> String {
        // Spaces are the separator: a value holding one would shift the fields.
        let clean = |s: &str| s.replace(char::is_whitespace, "_");
        format!(
            "eventbus host={} boot={} pidns={} uid={} pid={} start={} nonce={}",
            clean(&self.host),
            clean(&self.boot),
            clean(&self.pidns),
            clean(&self.uid),
            self.pid,
            clean(&self.start),
            clean(&self.nonce)
        )
    }

    fn parse(value: &str) -> Option<Holder> {
        let mut words = value.split(' ');
        if words.next()? != "eventbus" {
            return None;
        }
        let mut h = Holder {
            host: String::new(),
            boot: String::new(),
            pidns: String::new(),
            uid: String::new(),
            pid: 0,
            start: String::new(),
            nonce: String::new(),
        };
        for word in words {
            let (k, v) = word.split_once('=')?;
            match k {
                "host" => h.host = v.to_owned(),
                "boot" => h.boot = v.to_owned(),
                "pidns" => h.pidns = v.to_owned(),
                "uid" => h.uid = v.to_owned(),
                "pid" => h.pid = v.parse().ok()?,
                "start" => h.start = v.to_owned(),
                "nonce" => h.nonce = v.to_owned(),
                _ => {} // a later version's field
            }
        }
        Some(h)
    }

    /// Whether the holder of `value` is alive, as far as this process can tell.
    fn liveness(value: &str) -> Liveness {
        let Some(h) = Holder::parse(value) else {
            return Liveness::Unknown;
        };
        let me = process();
        let comparable = |a: &str, b: &str| !a.is_empty() && a == b;
        // Only within one machine, pid namespace and user do pids and /proc say anything (a
        // process of another user may be hidden from this one).
        if !(comparable(&h.boot, &me.boot)
            && comparable(&h.pidns, &me.pidns)
            && comparable(&h.uid, &me.uid)
            && comparable(&h.host, &me.host)
            && !me.start.is_empty())
        {
            return Liveness::Unknown;
        }
        if h.pid == me.pid && h.start == me.start {
            return if live_nonces().contains(&h.nonce) {
                Liveness::Alive
            } else {
                Liveness::Dead
            };
        }
        match start_of(&h.pid.to_string()) {
            Ok(None) => Liveness::Dead,
            Ok(Some(start)) if start != h.start => Liveness::Dead,
            Ok(Some(_)) => Liveness::Alive,
            Err(_) => Liveness::Unknown,
        }
    }
}

/// The name a bus's consumers use, and the lease on it.
pub(crate) struct Identity {
    pub(crate) name: String,
    lease: Option<Arc<Lease>>,
}

/// A held lease: renewed by a task until released.
struct Lease {
    transport: Arc<dyn Transport>,
    key: String,
    holder: Holder,
    value: String,
    /// How long it lasts unless renewed.
    ttl: Duration,
    /// Stops the renewals.
    released: CancellationToken,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.released.cancel();
        live_nonces().remove(&self.holder.nonce);
    }
}

impl Identity {
    /// Claims a consumer name for `base`: see the [module docs](self). `key` gives the lease
    /// key of a name.
    pub(crate) async fn claim(
        transport: Arc<dyn Transport>,
        base: &str,
        ttl: Duration,
        key: impl Fn(&str) -> String,
    ) -> Identity {
        let ttl = ttl.max(MIN_LEASE_TTL);
        let holder = Holder::new();
        let value = holder.value();
        // Registered first: a lease of this bus must count as alive from the moment it exists.
        live_nonces().insert(holder.nonce.clone());
        let started = Instant::now();
        match claim_name(&*transport, base, &value, ttl, &key).await {
            Ok(Some(name)) => {
                let lease = Arc::new(Lease {
                    transport,
                    key: key(&name),
                    holder,
                    value,
                    ttl,
                    released: CancellationToken::new(),
                });
                renew(&lease, name.clone());
                if name == base {
                    tracing::info!(consumer = %name, waited = ?started.elapsed(), "consumer name leased");
                } else {
                    tracing::info!(consumer = %name, base, waited = ?started.elapsed(), "consumer name leased: the base name is held by another live process");
                }
                Identity {
                    name,
                    lease: Some(lease),
                }
            }
            Ok(None) => {
                live_nonces().remove(&holder.nonce);
                let name = process_unique(base);
                tracing::warn!(consumer = %name, base, "every candidate consumer name is held by a live process; using a name unique to this process");
                Identity { name, lease: None }
            }
            Err(e) => {
                live_nonces().remove(&holder.nonce);
                let name = process_unique(base);
                tracing::warn!(consumer = %name, base, error = %e, "cannot lease a consumer name; using a name unique to this process (a restart will not find its pending entries at once)");
                Identity { name, lease: None }
            }
        }
    }

    /// Ends the lease at once (a graceful shutdown, after the last ack): a restarted instance
    /// takes the name back without waiting.
    pub(crate) async fn release(&self) {
        let Some(lease) = &self.lease else {
            return;
        };
        lease.released.cancel();
        if let Err(e) = lease
            .transport
            .release_lease(&lease.key, &lease.value)
            .await
        {
            tracing::debug!(key = %lease.key, error = %e, "cannot release the consumer name's lease; it expires by itself");
        }
        live_nonces().remove(&lease.holder.nonce);
    }
}

/// The name of `base`, `base-2`, … this holder gets; `None` when every candidate is held by a
/// live process.
///
/// A name held by a dead holder comes first: its pending entries wait for exactly this
/// restart. So the scan goes on past the first free name (held meanwhile) until a second free
/// one, where the names in use end.
async fn claim_name(
    transport: &dyn Transport,
    base: &str,
    value: &str,
    ttl: Duration,
    key: &impl Fn(&str) -> String,
) -> crate::Result<Option<String>> {
    let mut free: Option<String> = None;
    for n in 1..=MAX_CANDIDATES {
        let name = if n == 1 {
            base.to_owned()
        } else {
            format!("{base}-{n}")
        };
        let lease = key(&name);
        let (holder, remaining) = match transport.hold_lease(&lease, value, ttl, None).await? {
            LeaseState::Held if free.is_none() => {
                free = Some(name);
                continue;
            }
            LeaseState::Held => {
                transport.release_lease(&lease, value).await?;
                break;
            }
            LeaseState::HeldBy { holder, remaining } => (holder, remaining),
        };
        let taken = match Holder::liveness(&holder) {
            Liveness::Alive => false,
            Liveness::Dead => take_over(transport, &lease, value, ttl, &holder).await?,
            // Waiting only pays before a free name: after it, the bus takes that one.
            Liveness::Unknown if free.is_none() => {
                watch(transport, &lease, value, ttl, &holder, remaining).await?
            }
            Liveness::Unknown => false,
        };
        if taken {
            if let Some(free) = free {
                transport.release_lease(&key(&free), value).await?;
            }
            return Ok(Some(name));
        }
    }
    Ok(free)
}

/// Takes the lease `key` from `holder`, known to be dead.
async fn take_over(
    transport: &dyn Transport,
    key: &str,
    value: &str,
    ttl: Duration,
    holder: &str,
) -> crate::Result<bool> {
    let state = transport.hold_lease(key, value, ttl, Some(holder)).await?;
    if state == LeaseState::Held {
        tracing::info!(%key, previous = %holder, "took over the lease of a process that is gone");
    }
    Ok(state == LeaseState::Held)
}

/// Waits for the lease of a holder this process cannot check: true once it expired and is
/// ours, false when the holder renewed it (alive) or another took it. The wait follows the
/// lease's own expiry (`remaining`, from the server), whatever ttl its holder uses.
async fn watch(
    transport: &dyn Transport,
    key: &str,
    value: &str,
    ttl: Duration,
    holder: &str,
    remaining: Duration,
) -> crate::Result<bool> {
    let since = Instant::now();
    let expires = since + remaining;
    let give_up = expires + RENEWAL_MARGIN + 2 * WATCH_EVERY;
    tracing::info!(%key, %holder, "the consumer name is leased by a process that cannot be checked from here; waiting for a renewal or for the lease to expire");
    while Instant::now() < give_up {
        tokio::time::sleep(WATCH_EVERY).await;
        match transport.hold_lease(key, value, ttl, None).await? {
            LeaseState::Held => {
                tracing::info!(%key, waited = ?since.elapsed(), "the lease expired without renewal; taken");
                return Ok(true);
            }
            LeaseState::HeldBy {
                holder: now_held_by,
                remaining,
            } => {
                if now_held_by != holder || Instant::now() + remaining > expires + RENEWAL_MARGIN {
                    return Ok(false);
                }
            }
        }
    }
    Ok(false)
}

/// Renews the lease every tenth of its ttl until it is released or dropped.
fn renew(lease: &Arc<Lease>, name: String) {
    let released = lease.released.clone();
    let (ttl, every) = (lease.ttl, lease.ttl / RENEWALS_PER_TTL);
    let lease = Arc::downgrade(lease);
    tokio::spawn(async move {
        let mut lost = false;
        let mut failing = false;
        loop {
            tokio::select! {
                () = released.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let Some(lease) = lease.upgrade() else {
                return;
            };
            match lease
                .transport
                .hold_lease(&lease.key, &lease.value, ttl, None)
                .await
            {
                Ok(LeaseState::Held) => {
                    if std::mem::take(&mut lost) || std::mem::take(&mut failing) {
                        tracing::info!(consumer = %name, "the consumer name's lease is renewed again");
                    }
                }
                Ok(LeaseState::HeldBy { holder, .. }) => {
                    if !std::mem::replace(&mut lost, true) {
                        tracing::error!(consumer = %name, %holder, "the consumer name's lease expired (not renewed for {ttl:?}) and another process took it: both now read as this consumer; restart one of them");
                    }
                }
                Err(Error::Closed) => return,
                Err(e) => {
                    // Once per outage: the consumers log the outage themselves.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(consumer = %name, error = %e, "cannot renew the consumer name's lease (it lasts {ttl:?}); retrying every {every:?}");
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_value_reads_back() {
        let h = Holder::new();
        assert_eq!(Holder::parse(&h.value()), Some(h));
        assert_eq!(Holder::parse("someone else"), None);
        assert_eq!(Holder::parse("eventbus pid=x"), None);
    }

    #[test]
    fn the_default_instance_is_stable_and_a_valid_name() {
        let name = default_instance();
        assert_eq!(name, default_instance());
        assert!(crate::channel::validate_channel(&name).is_ok(), "{name}");
    }

    #[test]
    fn liveness_of_holders() {
        let me = Holder::new();
        // A bus of this process that holds no lease any more, then one that does.
        assert_eq!(Holder::liveness(&me.value()), Liveness::Dead);
        live_nonces().insert(me.nonce.clone());
        assert_eq!(Holder::liveness(&me.value()), Liveness::Alive);
        live_nonces().remove(&me.nonce);
        // Another process of this machine: gone, or alive with the pid of one that is gone.
        let parent = Holder {
            pid: std::os::unix::process::parent_id(),
            start: start_of(&std::os::unix::process::parent_id().to_string())
                .unwrap()
                .unwrap(),
            ..me.clone()
        };
        assert_eq!(Holder::liveness(&parent.value()), Liveness::Alive);
        let recycled = Holder {
            start: "1".to_owned(),
            ..parent.clone()
        };
        assert_eq!(Holder::liveness(&recycled.value()), Liveness::Dead);
        let gone = Holder {
            pid: u32::MAX - 1,
            ..parent.clone()
        };
        assert_eq!(Holder::liveness(&gone.value()), Liveness::Dead);
        // Another machine: nothing to check.
        let remote = Holder {
            boot: "another-boot".to_owned(),
            ..gone
        };
        assert_eq!(Holder::liveness(&remote.value()), Liveness::Unknown);
        assert_eq!(Holder::liveness("not ours"), Liveness::Unknown);
    }
}
