//! How Redis failures become [`eventbus_core::Error`]s: every error names the command and the
//! key, channel or group involved, and keeps the redis error as its source.

use eventbus_core::Error;
use redis::RedisError;

/// The transport name in errors and logs.
pub(crate) const TRANSPORT: &str = "redis";

/// A transport error: `what` says what was being done (`XADD to stream "a.b"`).
pub(crate) fn command_failed(what: impl Into<String>, error: RedisError) -> Error {
    Error::transport(TRANSPORT, what, Some(Box::new(error) as _))
}

/// A transport error without an underlying redis error (a reply of an unexpected shape).
pub(crate) fn unexpected(what: impl Into<String>) -> Error {
    Error::transport(TRANSPORT, what, None)
}

/// The error code of a server reply (`NOGROUP`, `BUSYGROUP`, `WRONGTYPE`...).
fn code(error: &RedisError) -> Option<&str> {
    error.code()
}

/// The stream or its consumer group does not exist (any more).
pub(crate) fn is_no_group(error: &RedisError) -> bool {
    code(error) == Some("NOGROUP")
}

/// `XGROUP CREATE` for a group that exists already.
pub(crate) fn is_busy_group(error: &RedisError) -> bool {
    code(error) == Some("BUSYGROUP")
}

/// `XINFO` on a key that does not exist.
pub(crate) fn is_no_such_key(error: &RedisError) -> bool {
    error.to_string().contains("no such key")
}

/// True when the connection that produced `error` can no longer be trusted (I/O failure,
/// dropped connection, timeout): the caller drops it and connects again. A server reply error
/// (`NOGROUP`, `WRONGTYPE`...) leaves the connection usable.
pub(crate) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || error.is_timeout()
        || code(error).is_none()
}
