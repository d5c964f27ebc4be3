//! Errors of the bus (`Error`) and of handlers (`HandlerError`).

use std::fmt;
use std::time::Duration;

use crate::channel::ChannelError;

/// A boxed error from a transport or a handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the bus [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on the bus side (publishing, subscribing, starting handlers).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event could not be serialized.
    #[error("cannot encode {event} as JSON: {source}")]
    Encode {
        /// Rust type of the event.
        event: &'static str,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A received message could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A channel name (template value or namespace) is invalid.
    #[error("invalid channel for {event}: {source}")]
    Channel {
        /// Rust type of the event, or `namespace`.
        event: &'static str,
        /// What is wrong with it.
        source: ChannelError,
    },
    /// Two event types map to the same channel.
    #[error(
        "event types {first} and {second} both map to channel `{channel}`; give one of them another `#[event(name = \"...\")]`"
    )]
    DuplicateChannel {
        /// The shared channel.
        channel: String,
        /// One type.
        first: &'static str,
        /// The other type.
        second: &'static str,
    },
    /// The transport (Redis, memory) failed. From a publish it means that nothing was written:
    /// the command was never sent (the connection was down and not back within the deadline)
    /// or the server refused it. A publish that may have been written fails with
    /// [`Error::PublishOutcomeUnknown`] instead.
    #[error("{transport} transport: {message}{}", source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Transport {
        /// `memory` or `redis`.
        transport: &'static str,
        /// What was being done, with the key or channel involved.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A publish was handed to the transport, but its reply never came back: a timeout or a
    /// connection lost while waiting for it. The events may or may not have been written, and
    /// consumers may already have them. Publishing them again may therefore make duplicates:
    /// publish each with its id ([`PublishOptions::event_id`](crate::PublishOptions::event_id)
    /// with an id of `event_ids`), so that `dedup` handlers skip the copy their group handled
    /// already. A publish that fails with any other error wrote nothing.
    #[error(
        "{transport} transport: {message}; the outcome is unknown, the events may have been \
         written (event ids {}): publish them again with the same ids so that dedup handlers \
         skip a duplicate{}",
        event_ids.join(", "),
        source.as_ref().map(|s| format!(": {s}")).unwrap_or_default()
    )]
    PublishOutcomeUnknown {
        /// `redis`.
        transport: &'static str,
        /// What was being done, with the key or channel involved.
        message: String,
        /// The CloudEvents ids of the events whose outcome is unknown, in the order they were
        /// given.
        event_ids: Vec<String>,
        /// The underlying error (the timeout, the lost connection).
        #[source]
        source: Option<BoxError>,
    },
    /// An event id given with [`PublishOptions::event_id`](crate::PublishOptions::event_id)
    /// cannot be used.
    #[error("invalid event id for {event}: {reason}")]
    InvalidEventId {
        /// Rust type of the event.
        event: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The server refused a command for lack of permission: a Redis ACL user without access
    /// to the command, the key or the channel. Retrying does not help until an operator grants
    /// it (`ACL SETUSER`).
    #[error(transparent)]
    PermissionDenied(Box<PermissionDenied>),
    /// A request got no reply in time.
    #[error("request {event} got no reply within {timeout:?}")]
    Timeout {
        /// Rust type of the request.
        event: &'static str,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// A request was published but nobody listens on its channel.
    #[error("request {event} on `{channel}` has no subscriber")]
    NoResponders {
        /// Rust type of the request.
        event: &'static str,
        /// The channel it was published on.
        channel: String,
    },
    /// The handler of a request failed; its error message came back as the reply.
    #[error("the handler of request {event} failed: {message}")]
    Remote {
        /// Rust type of the request.
        event: &'static str,
        /// The handler's error message.
        message: String,
    },
    /// A payload exceeds the configured size limit.
    #[error("payload of {size} bytes on `{channel}` exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The channel.
        channel: String,
        /// The payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A handler option is not allowed for this event or with another option (`dedup` on an
    /// ephemeral event, `dedup` with `broadcast`, ...).
    #[error("handler {handler}: {reason}")]
    InvalidOptions {
        /// The handler.
        handler: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Application state that was not given to the bus. For a handler that takes
    /// [`State<T>`](crate::State) it is raised when the handler starts, before it reads
    /// anything, so no event is ever retried or dead-lettered for it.
    #[error("{}", crate::state::missing(handler.as_deref(), type_name, *given_instead))]
    MissingState {
        /// The handler that needs it (`billing::charge`, or a closure's type name), when known.
        handler: Option<String>,
        /// The Rust type of the missing state (`my_service::Db`).
        type_name: &'static str,
        /// A type the bus holds that looks like a mistake for this one (`Arc<my_service::Db>`).
        given_instead: Option<&'static str>,
    },
    /// A pattern for [`Bus::subscribe_pattern`](crate::Bus::subscribe_pattern) is invalid.
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No `#[handler]` is linked into this binary.
    #[error(
        "no #[handler] is linked into this binary: a crate whose handlers are never referenced \
         is not linked; add `use that_crate as _;` to main.rs"
    )]
    NoHandlers,
    /// The registered handlers of this bus were started already.
    #[error("the registered handlers of this bus are already started")]
    AlreadyStarted,
    /// [`testing::call_handler`](crate::testing::call_handler) found no handler of that name.
    #[error("no registered handler of {event} is named {name:?}")]
    HandlerNotFound {
        /// Rust type of the event.
        event: &'static str,
        /// The name asked for.
        name: String,
    },
    /// [`testing::call_handler`](crate::testing::call_handler) found several handlers of that
    /// name: give the full path.
    #[error("{name:?} names several handlers of {event}: {}", matches.join(", "))]
    AmbiguousHandler {
        /// Rust type of the event.
        event: &'static str,
        /// The name asked for.
        name: String,
        /// The full paths of the handlers it matches.
        matches: Vec<&'static str>,
    },
    /// [`testing::try_settle`](crate::testing::try_settle) ran out of time with work still
    /// outstanding.
    #[error(
        "the bus did not settle within {timeout:?}: {queued} messages queued or pending in the \
         transport, {in_flight} handler calls in flight, {backlog} entries unread or pending in \
         its consumer groups"
    )]
    NotSettled {
        /// The timeout that elapsed.
        timeout: Duration,
        /// Messages queued or pending in the transport.
        queued: usize,
        /// Handler calls running.
        in_flight: usize,
        /// Entries unread or pending in the bus's consumer groups, when last asked.
        backlog: u64,
    },
    /// [`Transport::replay_dead_letter`](crate::Transport::replay_dead_letter) found no dead
    /// letter with that id (it was replayed already, or never existed).
    #[error("no dead letter {id} in `{dlq}`")]
    NoSuchDeadLetter {
        /// The dead-letter stream.
        dlq: String,
        /// The id asked for.
        id: String,
    },
    /// A dead letter cannot be replayed: it does not say where it came from.
    #[error("dead letter {id} in `{dlq}` cannot be replayed: {reason}")]
    InvalidDeadLetter {
        /// The dead-letter stream.
        dlq: String,
        /// Its id.
        id: String,
        /// What is missing.
        reason: &'static str,
    },
    /// Configuration read from the environment or a URL is invalid.
    #[error("{0}")]
    Config(String),
    /// The bus was shut down.
    #[error("the bus is shut down")]
    Closed,
}

impl Error {
    /// A transport error with context and an optional cause.
    pub fn transport(
        transport: &'static str,
        message: impl Into<String>,
        source: impl Into<Option<BoxError>>,
    ) -> Self {
        Error::Transport {
            transport,
            message: message.into(),
            source: source.into(),
        }
    }
}

/// The details of [`Error::PermissionDenied`]: who may not run which command on what, and the
/// server's reason. No password is ever part of it.
///
/// Its `Display`: `permission denied: user 'limited' may not run XADD on key 'shop.orders.Order'
/// (NOPERM this user has no permissions to access one of the keys used as arguments)`.
#[derive(Debug, thiserror::Error)]
#[error(
    "permission denied: user '{user}' may not run {command} on {target_kind} '{target}' ({reason})"
)]
pub struct PermissionDenied {
    /// The transport: `redis`.
    pub transport: &'static str,
    /// The user the connection authenticated as (`default` without a user name).
    pub user: String,
    /// The refused command (`XADD`, `PUBLISH`, `SUBSCRIBE`, `XGROUP CREATE`...).
    pub command: String,
    /// `key`, `channel` or `pattern`.
    pub target_kind: &'static str,
    /// The key, channel or pattern the command was run on.
    pub target: String,
    /// The server's reply (`NOPERM this user has no permissions to access one of the keys used
    /// as arguments`).
    pub reason: String,
    /// The underlying error.
    #[source]
    pub source: Option<BoxError>,
}

/// A message that could not be turned into an event: malformed JSON, a wrong shape, a missing
/// field. It names the channel and shows the start of the payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode message on `{channel}`: {reason}; payload starts with {excerpt:?}")]
pub struct DecodeError {
    /// The channel or stream the message came from.
    pub channel: String,
    /// What is wrong.
    pub reason: String,
    /// The first bytes of the payload (lossy UTF-8, at most 120 characters).
    pub excerpt: String,
}

impl DecodeError {
    /// Builds the error with an excerpt of `payload`.
    pub fn new(channel: &str, reason: impl fmt::Display, payload: &[u8]) -> Self {
        DecodeError {
            channel: channel.to_owned(),
            reason: reason.to_string(),
            excerpt: excerpt(payload),
        }
    }
}

fn excerpt(payload: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX * 4)]);
    let mut out: String = text.chars().take(MAX).collect();
    if out.len() < text.len() || payload.len() > MAX * 4 {
        out.push('…');
    }
    out
}

/// The error a handler returns. Anything that converts into a boxed error converts into it, so
/// `?` works on `std::io::Error`, `String`, `&str`, `anyhow::Error`, `eventbus::Error`...
///
/// A handler error is retried with backoff until the handler's `max_deliveries`, then the
/// message is dead-lettered with this error as the reason. [`HandlerError::permanent`] skips the
/// retries (the message can never succeed, e.g. it fails validation).
///
/// ```
/// use eventbus_core::HandlerError;
/// fn check(amount: i64) -> Result<(), HandlerError> {
///     if amount < 0 {
///         return Err(HandlerError::permanent(format!("negative amount {amount}")));
///     }
///     let _n: u32 = "42".parse()?; // any std error converts
///     Ok(())
/// }
/// assert!(check(-1).unwrap_err().is_permanent());
/// ```
pub struct HandlerError {
    source: BoxError,
    permanent: bool,
}

impl HandlerError {
    /// A failure that is retried.
    pub fn new(error: impl Into<BoxError>) -> Self {
        HandlerError {
            source: error.into(),
            permanent: false,
        }
    }

    /// A failure that retrying cannot fix: the message goes to the dead-letter stream at once.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError {
            source: error.into(),
            permanent: true,
        }
    }

    /// True for [`HandlerError::permanent`] errors and undecodable messages.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::new(error)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("error", &self.to_string())
            .field("permanent", &self.permanent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_error_shows_channel_and_excerpt() {
        let long = vec![b'x'; 1000];
        let e = DecodeError::new("a.b", "expected value", &long);
        assert!(e.excerpt.ends_with('…'));
        assert_eq!(e.excerpt.chars().count(), 121);
        let msg = e.to_string();
        assert!(msg.contains("`a.b`") && msg.contains("expected value"));
    }

    #[test]
    fn handler_error_converts_from_std_errors_and_strings() {
        let e: HandlerError = "boom".into();
        assert_eq!(e.to_string(), "boom");
        let e: HandlerError = "x".parse::<u32>().unwrap_err().into();
        assert!(!e.is_permanent());
    }
}
