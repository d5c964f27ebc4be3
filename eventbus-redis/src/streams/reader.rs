//! The connection of one stream consumer.
//!
//! It has no response timeout, because `XREADGROUP … BLOCK` legitimately waits; a reply that
//! takes longer than the block time plus the response timeout counts as a lost connection. A
//! lost connection is dropped and a new one is opened by the next command (counted in
//! `Stats::reconnects`).

use std::io;
use std::sync::Arc;
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
        self.conn = Some(conn.clone());
        Ok(conn)
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
