//! The shared command connection (publishes, acks, dead letters, introspection), with a bound on
//! how long any command may take.
//!
//! The [`ConnectionManager`]'s response timeout only runs once a command was handed to a
//! connection. While the manager re-establishes a lost connection, a command waits for that,
//! through every attempt (each up to `connection_timeout`) and the pauses between them: with a
//! server that vanished into a network black hole, for tens of seconds. [`SharedConnection`]
//! bounds the whole: every command returns within `connection_timeout + response_timeout`, with
//! a timeout error if need be, while the manager goes on reconnecting in the background.

use std::io;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::RedisOptions;

/// The transport's multiplexed connection manager with a deadline on every command. Cheap to
/// clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct SharedConnection {
    manager: ConnectionManager,
    deadline: Duration,
}

impl SharedConnection {
    /// Wraps `manager`; commands get `connection_timeout + response_timeout` at most.
    pub(crate) fn new(manager: ConnectionManager, options: &RedisOptions) -> Self {
        SharedConnection {
            manager,
            deadline: options
                .connection_timeout
                .saturating_add(options.response_timeout),
        }
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
}

impl ConnectionLike for SharedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let deadline = self.deadline;
            match tokio::time::timeout(deadline, self.manager.req_packed_command(cmd)).await {
                Ok(result) => result,
                Err(_elapsed) => Err(self.timed_out()),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let deadline = self.deadline;
            let request = self.manager.req_packed_commands(pipeline, offset, count);
            match tokio::time::timeout(deadline, request).await {
                Ok(result) => result,
                Err(_elapsed) => Err(self.timed_out()),
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}
