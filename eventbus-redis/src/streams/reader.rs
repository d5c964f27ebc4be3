//! The connection of one stream consumer.
//!
//! It has no response timeout, because `XREADGROUP … BLOCK` legitimately waits; a reply that
//! takes longer than the block time plus the response timeout counts as a lost connection. A
//! lost connection is dropped and a new one is opened by the next command (counted in
//! `Stats::reconnects`).
//!
//! A consumer that stops cuts its blocking read short ([`Interrupter`]): `CLIENT UNBLOCK` ends
//! it as if its time was up, so what Redis handed over arrives and nothing new is taken.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use eventbus_core::stats::Stats;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};

use crate::Inner;
use crate::error::is_connection_error;

pub(super) struct Reader {
    client: redis::Client,
    config: AsyncConnectionConfig,
    conn: Option<MultiplexedConnection>,
    /// The previous connection was lost: count the next successful connect as a reconnect.
    lost: bool,
    /// A connection was lost since [`Reader::take_dropped`] was last called.
    dropped: bool,
    /// Longest wait for any reply, blocking reads included.
    reply_limit: Duration,
    stats: Arc<Stats>,
    /// The consumer, for logs and errors.
    pub(super) what: String,
    pub(super) interrupter: Interrupter,
}

impl Reader {
    pub(super) fn new(inner: &Inner, what: String, stats: Arc<Stats>) -> Self {
        Reader {
            client: inner.consumer_client.clone(),
            config: AsyncConnectionConfig::new()
                .set_response_timeout(None)
                .set_connection_timeout(Some(inner.options.connection_timeout)),
            conn: None,
            lost: false,
            dropped: false,
            reply_limit: inner.options.block + inner.options.response_timeout,
            stats,
            what,
            interrupter: Interrupter::default(),
        }
    }

    async fn connection(&mut self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        if self.lost {
            self.lost = false;
            Stats::incr(&self.stats.reconnects);
            tracing::info!(consumer = %self.what, "stream consumer reconnected");
        }
        let mut probe = conn.clone();
        let id = match redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut probe)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                // Only a stop gets slower: it waits for the blocking read to time out.
                tracing::debug!(consumer = %self.what, error = %e, "CLIENT ID failed; a stop will wait for the blocking read");
                0
            }
        };
        self.interrupter.client_id.store(id, Ordering::SeqCst);
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs a blocking read, unless the consumer is stopping (then `Ok(None)`). A stop that
    /// comes while it waits ends the wait ([`Interrupter::interrupt`]).
    pub(super) async fn blocking_cmd(&mut self, cmd: &redis::Cmd) -> RedisResult<Option<Value>> {
        let interrupter = self.interrupter.clone();
        interrupter.blocking.store(true, Ordering::SeqCst);
        let _done = Blocking(&interrupter);
        if interrupter.stopping.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.cmd(cmd).await.map(Some)
    }

    /// Runs one command or pipeline on this consumer's connection.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &mut self,
        run: impl AsyncFnOnce(&mut MultiplexedConnection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.lost = true;
                self.dropped = true;
                return Err(e);
            }
        };
        let result = match tokio::time::timeout(self.reply_limit, run(&mut conn)).await {
            Ok(r) => r,
            Err(_elapsed) => Err(RedisError::from(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply from Redis within {:?}", self.reply_limit),
            ))),
        };
        if let Err(e) = &result
            && is_connection_error(e)
        {
            self.interrupter.client_id.store(0, Ordering::SeqCst);
            if self.conn.take().is_some() {
                tracing::warn!(consumer = %self.what, error = %e, "stream consumer lost its connection; reconnecting on the next read");
            }
            self.lost = true;
            self.dropped = true;
        }
        result
    }

    /// True once after the connection was lost (or could not be opened): replies Redis sent on
    /// it may never have arrived.
    pub(super) fn take_dropped(&mut self) -> bool {
        std::mem::take(&mut self.dropped)
    }

    /// Runs one command.
    pub(super) async fn cmd(&mut self, cmd: &redis::Cmd) -> RedisResult<Value> {
        self.query(async |c| cmd.query_async(c).await).await
    }
}

/// Lets a stopping consumer end its blocking read early. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Interrupter {
    stopping: Arc<AtomicBool>,
    /// A blocking read is on its way or waiting.
    blocking: Arc<AtomicBool>,
    /// `CLIENT ID` of the reader's connection, 0 when unknown.
    client_id: Arc<AtomicI64>,
}

/// Clears [`Interrupter::blocking`] when the read ends or its future is dropped.
struct Blocking<'a>(&'a Interrupter);

impl Drop for Blocking<'_> {
    fn drop(&mut self) {
        self.0.blocking.store(false, Ordering::SeqCst);
    }
}

/// How often `CLIENT UNBLOCK` is sent again while a read is on its way to Redis.
const UNBLOCK_RETRY: Duration = Duration::from_millis(10);

impl Interrupter {
    /// True once the consumer is stopping: it starts no claim and no blocking read.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Marks the consumer as stopping and ends a blocking read in flight: `CLIENT UNBLOCK`
    /// (the read returns what it would return at its timeout), sent again while the read is
    /// still on its way to Redis. Returns once no read blocks; without `CLIENT UNBLOCK` (an
    /// ACL may forbid it) the read ends at its timeout.
    pub(super) async fn interrupt(&self, publisher: &crate::connection::SharedConnection) {
        self.stopping.store(true, Ordering::SeqCst);
        while self.blocking.load(Ordering::SeqCst) {
            let id = self.client_id.load(Ordering::SeqCst);
            if id <= 0 {
                return;
            }
            let mut conn = publisher.clone();
            match redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async::<i64>(&mut conn)
                .await
            {
                Ok(1) => return,
                Ok(_) => tokio::time::sleep(UNBLOCK_RETRY).await,
                Err(e) => {
                    tracing::debug!(error = %e, "CLIENT UNBLOCK failed; the read ends at its timeout");
                    return;
                }
            }
        }
    }
}
