//! The shared command connection (publishes, acks, dead letters, dedup marks, introspection),
//! with a bound on how long any command may take and on how long a dead connection stays in use.
//!
//! The [`ConnectionManager`]'s response timeout only runs once a command was handed to a
//! connection. While the manager re-establishes a lost connection, a command waits for that,
//! through every attempt (each up to `connection_timeout`) and the pauses between them: with a
//! server that vanished into a network black hole, for tens of seconds. [`SharedConnection`]
//! bounds the whole: every command returns within `connection_timeout + response_timeout`, with
//! a timeout error if need be, while the manager goes on reconnecting in the background.
//!
//! The manager reconnects only when it sees the socket close. A connection that dies silently (a
//! lost NAT or firewall entry, a crashed host) stays open and every command sent on it times out,
//! forever. So the first command that times out starts a repair: a `PING` with
//! `response_timeout` as deadline tells a slow reply from a dead path; when it gets no answer
//! the connection is dropped and a new one made, attempt after attempt (each bounded by
//! `connection_timeout`), until one answers. While the `PING` runs, commands still go to the old
//! connection (a slow server is not a dead one); once it went unanswered, or another command
//! timed out meanwhile, they wait for the new connection instead, within their deadline, and
//! fail with the timeout error when it does not come. A dead path holds up commands for at most
//! `2 × response_timeout + connection_timeout` (the command that timed out, the `PING`, a new
//! connection) once a new connection can get through.
//!
//! A socket that closed (seen as a RESP3 `Disconnection` push) is handled the same way: the
//! manager reconnects by itself, and commands wait until a `PING` shows the connection back
//! (or a replacement is in place), instead of being handed to a connection that is down.
//!
//! So a failed command knows whether it reached a connection ([`Failure::sent`]). One that
//! waited for a lost connection to come back and ran out of time was never sent: it did not
//! run. One that was sent and got no reply (a timeout, a socket closed while waiting) may have
//! run. Replacing the connection changes nothing about what was acknowledged: a command returns
//! `Ok` only with the server's reply.
//!
//! Every loss is logged (warn) and counted once in `Stats::reconnects` of every bus on the
//! transport: a closed socket as well as a replacement of a silent connection.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use eventbus_core::stats::Stats;
use redis::aio::{
    AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig, SendError,
};
use redis::{Cmd, Pipeline, PushInfo, PushKind, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::RedisOptions;

/// Pause between two attempts to replace a dead connection: a server that refuses connections
/// at once is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The transport's multiplexed connection with a deadline on every command, replaced when it
/// stops answering. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct SharedConnection {
    shared: Arc<Shared>,
}

/// What the clones of one [`SharedConnection`] share.
struct Shared {
    current: RwLock<ConnectionManager>,
    /// Opens a replacement: the client, and the manager settings without push sender.
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// `connection_timeout + response_timeout`: the most any command may take.
    deadline: Duration,
    /// How long the health `PING` may take.
    probe_timeout: Duration,
    connection_timeout: Duration,
    /// Set while a repair (probe, then replacement) runs: one at a time.
    repairing: AtomicBool,
    /// Set while the connection in use is known dead: commands wait for its replacement.
    dead: AtomicBool,
    /// Bumped (to the new generation) when a replacement is in place, for the waiting commands.
    replaced: watch::Sender<u64>,
    losses: Arc<Losses>,
}

/// Where losses are logged and counted; shared with the push sender of the connection in use.
struct Losses {
    /// The generation of the connection in use: bumped by every replacement, so that a push
    /// from a connection dropped on purpose is not counted as a loss.
    generation: AtomicU64,
    /// The stats of every bus on the transport.
    stats: Mutex<Vec<Weak<Stats>>>,
    server: String,
    /// Cancelled when the transport closes: nothing is counted or repaired any more.
    closed: CancellationToken,
    /// The connection these losses are of, to hold commands back once its socket closed.
    shared: OnceLock<Weak<Shared>>,
}

impl Losses {
    fn count(&self) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.retain(|s| match s.upgrade() {
            Some(s) => {
                Stats::incr(&s.reconnects);
                true
            }
            None => false,
        });
    }
}

/// Watches one connection's pushes for its loss.
struct LossWatch {
    losses: Arc<Losses>,
    generation: u64,
}

impl AsyncPushSender for LossWatch {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let losses = &self.losses;
        if losses.closed.is_cancelled() {
            return Err(SendError);
        }
        if info.kind == PushKind::Disconnection
            && losses.generation.load(Ordering::SeqCst) == self.generation
        {
            losses.count();
            tracing::warn!(
                server = %losses.server,
                "the shared connection to Redis was closed; reconnecting (commands in flight \
                 failed: their outcome is unknown)"
            );
            // New commands wait until the connection answers again, so that one failing
            // meanwhile is known not to have been sent.
            if let Some(shared) = losses.shared.get().and_then(Weak::upgrade) {
                shared.suspect(self.generation, true);
            }
        }
        Ok(())
    }
}

impl SharedConnection {
    /// Opens the connection to `client`; commands get `connection_timeout + response_timeout` at
    /// most. `server` names it in logs; `closed` ends repairs and counting.
    pub(crate) async fn connect(
        client: redis::Client,
        options: &RedisOptions,
        server: String,
        closed: CancellationToken,
    ) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_max_delay(options.reconnect_max_delay);
        let losses = Arc::new(Losses {
            generation: AtomicU64::new(0),
            stats: Mutex::new(Vec::new()),
            server,
            closed,
            shared: OnceLock::new(),
        });
        let watch = LossWatch {
            losses: losses.clone(),
            generation: 0,
        };
        let manager = client
            .get_connection_manager_with_config(config.clone().set_push_sender(watch))
            .await?;
        let connection = SharedConnection {
            shared: Arc::new(Shared {
                current: RwLock::new(manager),
                client,
                config,
                deadline: options
                    .connection_timeout
                    .saturating_add(options.response_timeout),
                probe_timeout: options.response_timeout,
                connection_timeout: options.connection_timeout,
                repairing: AtomicBool::new(false),
                dead: AtomicBool::new(false),
                replaced: watch::Sender::new(0),
                losses,
            }),
        };
        let shared = Arc::downgrade(&connection.shared);
        let _ = connection.shared.losses.shared.set(shared);
        Ok(connection)
    }

    /// Counts losses of this connection in `stats` too (once per bus on the transport).
    pub(crate) fn count_in(&self, stats: &Arc<Stats>) {
        let mut all = self
            .shared
            .losses
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Buses come and go on a long-lived transport: forget the dropped ones.
        all.retain(|s| s.strong_count() > 0);
        let stats = Arc::downgrade(stats);
        if !all.iter().any(|s| s.ptr_eq(&stats)) {
            all.push(stats);
        }
    }

    /// Runs `request` on the connection in use, within the deadline; a timeout starts a repair.
    /// A failure says whether the request was handed to the connection.
    async fn bounded<T>(
        &self,
        request: impl AsyncFnOnce(&mut ConnectionManager) -> RedisResult<T>,
    ) -> Result<T, Failure> {
        let shared = &self.shared;
        // The connection the command went to, for the repair its timeout starts; read before
        // the command runs, so that a timeout while waiting suspects the connection found dead.
        let used = AtomicU64::new(shared.losses.generation.load(Ordering::SeqCst));
        let handed = AtomicBool::new(false);
        let attempt = async {
            if shared.dead.load(Ordering::SeqCst) {
                let mut replaced = shared.replaced.subscribe();
                // The sender lives as long as `shared`: this ends only when the flag clears.
                let _ = replaced
                    .wait_for(|_| !shared.dead.load(Ordering::SeqCst))
                    .await;
            }
            let (mut manager, generation) = shared.current();
            used.store(generation, Ordering::Relaxed);
            handed.store(true, Ordering::Relaxed);
            request(&mut manager).await
        };
        let result = tokio::time::timeout(shared.deadline, attempt).await;
        let generation = used.load(Ordering::Relaxed);
        let sent = handed.load(Ordering::Relaxed);
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.is_timeout() {
                    shared.suspect(generation, false);
                }
                Err(Failure { error, sent })
            }
            Err(_elapsed) => {
                shared.suspect(generation, false);
                Err(Failure {
                    error: shared.timed_out(),
                    sent,
                })
            }
        }
    }

    /// Runs one command, within the deadline.
    pub(crate) async fn run(&self, cmd: &Cmd) -> Result<Value, Failure> {
        self.bounded(async |manager| manager.req_packed_command(cmd).await)
            .await
    }

    /// Runs a pipeline, within the deadline.
    pub(crate) async fn run_pipeline(&self, pipeline: &Pipeline) -> Result<Vec<Value>, Failure> {
        self.run_commands(pipeline, 0, pipeline.len()).await
    }

    /// Runs `count` commands of `pipeline` from `offset` (the replies redis-rs expects), within
    /// the deadline.
    async fn run_commands(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, Failure> {
        self.bounded(async move |manager| {
            manager.req_packed_commands(pipeline, offset, count).await
        })
        .await
    }
}

/// A command that failed, and whether it was handed to a connection: one that was not never
/// reached Redis.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: RedisError,
    /// The command was handed to the connection: it may have been written, unless the error
    /// says otherwise (a refused connection, a reply of the server).
    pub(crate) sent: bool,
}

impl Failure {
    /// True when the command may have run on the server: it was handed to the connection and
    /// the connection was not refused (a refused connection sent nothing). An error reply of
    /// the server is not a failure here: it comes back as a `Value::ServerError`.
    pub(crate) fn may_have_run(&self) -> bool {
        self.sent && !self.error.is_connection_refusal()
    }
}

impl Shared {
    /// The connection in use and its generation.
    fn current(&self) -> (ConnectionManager, u64) {
        // A connection handle stays valid whatever panicked while the lock was held.
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (
            current.clone(),
            self.losses.generation.load(Ordering::SeqCst),
        )
    }

    /// The error of a command that ran out of time.
    fn timed_out(&self) -> RedisError {
        RedisError::from(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no reply within {:?}: the connection to Redis is lost and was not \
                 re-established in time",
                self.deadline
            ),
        ))
    }

    /// A command on connection `generation` timed out, or its socket closed (`counted`: the loss
    /// is counted already): checks it, unless a check runs already or that connection was
    /// replaced since.
    fn suspect(self: &Arc<Self>, generation: u64, counted: bool) {
        if self.losses.closed.is_cancelled()
            || self.losses.generation.load(Ordering::SeqCst) != generation
        {
            return;
        }
        if counted {
            // The socket is known closed: commands wait for the connection from now on.
            self.dead.store(true, Ordering::SeqCst);
        }
        if self.repairing.swap(true, Ordering::SeqCst) {
            // Another timeout while the PING runs: as good as a PING without answer, so the
            // next commands wait for a new connection instead of timing out on this one. A
            // PING that is answered after all clears it.
            self.dead.store(true, Ordering::SeqCst);
            return;
        }
        let shared = Arc::downgrade(self);
        let closed = self.losses.closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = closed.cancelled() => {}
                () = repair(&shared, generation, counted) => {}
            }
            if let Some(shared) = shared.upgrade() {
                shared.dead.store(false, Ordering::SeqCst);
                shared.repairing.store(false, Ordering::SeqCst);
                // Commands waiting for the connection go on: it answered, or was replaced.
                shared.replaced.send_modify(|_| {});
            }
        });
    }

    /// True when the connection in use answers a `PING` within the probe timeout.
    async fn answers(&self) -> bool {
        let (mut manager, _) = self.current();
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<Value>(&mut manager);
        matches!(
            tokio::time::timeout(self.probe_timeout, ping).await,
            Ok(Ok(_))
        )
    }

    /// One attempt at a new connection of generation `generation`, within the connection
    /// timeout; puts it in place of the one in use, and counts the loss unless it is `counted`.
    async fn replace(&self, generation: u64, counted: bool) -> RedisResult<()> {
        let watch = LossWatch {
            losses: self.losses.clone(),
            generation,
        };
        let config = self.config.clone().set_push_sender(watch);
        let opening = self.client.get_connection_manager_with_config(config);
        let fresh = match tokio::time::timeout(self.connection_timeout, opening).await {
            Ok(fresh) => fresh?,
            Err(_elapsed) => {
                return Err(RedisError::from(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no new connection within {:?}", self.connection_timeout),
                )));
            }
        };
        let old = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            // Bumped under the lock: a command never pairs the new connection with the old
            // generation.
            self.losses.generation.store(generation, Ordering::SeqCst);
            std::mem::replace(&mut *current, fresh)
        };
        // Counted before the waiting commands go on: whoever sees them succeed sees the count.
        if !counted {
            self.losses.count();
        }
        self.dead.store(false, Ordering::SeqCst);
        self.replaced.send_replace(generation);
        // Commands still in flight on the old connection hold clones of it: they end at their
        // response timeout, then the connection closes.
        drop(old);
        Ok(())
    }
}

/// Probes connection `generation` and replaces it when it does not answer, trying until a new
/// connection is in place or the transport is dropped. `counted`: its loss is counted already.
async fn repair(shared: &Weak<Shared>, generation: u64, counted: bool) {
    {
        let Some(s) = shared.upgrade() else {
            return;
        };
        if s.answers().await {
            return;
        }
        s.dead.store(true, Ordering::SeqCst);
        if counted {
            tracing::warn!(
                server = %s.losses.server,
                "the shared connection to Redis is not back yet; opening a new one (publishes \
                 and acks wait for it within their deadline, and fail as not sent)"
            );
        } else {
            tracing::warn!(
                server = %s.losses.server,
                timeout = ?s.probe_timeout,
                "the shared connection to Redis did not answer a PING in time; replacing it \
                 (publishes and acks wait for the new one within their deadline, and fail as \
                 not sent)"
            );
        }
    }
    let mut attempts = 0u32;
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        attempts += 1;
        match s.replace(generation + 1, counted).await {
            Ok(()) => {
                tracing::warn!(
                    server = %s.losses.server,
                    attempts,
                    "the shared connection to Redis was replaced"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, attempts, "cannot replace the shared connection yet");
            }
        }
        drop(s);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.run(cmd).await.map_err(|f| f.error) })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.run_commands(pipeline, offset, count)
                .await
                .map_err(|f| f.error)
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.current().0.get_db()
    }
}
