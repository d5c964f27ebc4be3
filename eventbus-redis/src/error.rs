//! How Redis failures become [`eventbus_core::Error`]s: every error names the command and the
//! key, channel or group involved, and keeps the redis error as its source.

use std::error::Error as StdError;
use std::sync::Arc;

use eventbus_core::{Error, PermissionDenied};
use redis::{RedisError, ServerErrorKind};
use rustls::{AlertDescription, CertificateError};

/// The transport name in errors and logs.
pub(crate) const TRANSPORT: &str = "redis";

/// A transport error: `what` says what was being done (`XADD to stream "a.b"`). A failed TLS
/// handshake gets a sentence saying why in plain words.
pub(crate) fn command_failed(what: impl Into<String>, error: RedisError) -> Error {
    let mut what = what.into();
    if let Some(reason) = tls_failure(&error) {
        what = format!("{what}: {reason}");
    }
    Error::transport(TRANSPORT, what, Some(Box::new(error) as _))
}

/// Explains a failed TLS handshake; `None` for any other error.
pub(crate) fn tls_failure(error: &RedisError) -> Option<String> {
    let reason = match find_rustls_error(error)? {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the server's TLS certificate was not trusted: it is not issued for the host name \
              of the URL"
            .to_owned(),
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "the server's TLS certificate was not trusted: it is not signed by a trusted CA \
              (a private CA must be passed with RedisOptions::tls_root_certificate)"
            .to_owned(),
        rustls::Error::InvalidCertificate(e) => {
            format!("the server's TLS certificate was not trusted ({e:?})")
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server refused the TLS handshake: it requires a client certificate \
             (RedisOptions::tls_client_identity)"
                .to_owned()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::HandshakeFailure),
        ) => format!(
            "the server refused the TLS handshake ({alert:?}): if it checks client \
             certificates, it got none or did not trust the one of \
             RedisOptions::tls_client_identity"
        ),
        e => format!("the TLS connection failed ({e})"),
    };
    Some(reason)
}

/// The rustls error under a redis error: redis keeps an `io::Error` (holding the rustls error)
/// behind an `Arc`, and `io::Error::source` skips the error it wraps, so each layer is opened
/// by hand.
fn find_rustls_error(error: &RedisError) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            current = Some(inner);
            continue;
        }
        if let Some(shared) = e.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
            current = Some(&**shared);
            continue;
        }
        current = e.source();
    }
    None
}

/// What a command was run on, for [`Error::PermissionDenied`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum On<'a> {
    /// A key (a stream).
    Key(&'a str),
    /// A pub/sub channel.
    Channel(&'a str),
    /// A pub/sub pattern.
    Pattern(&'a str),
}

/// The `NOPERM` reply in `error` (the first one of a pipeline), with the position of the refused
/// command in its pipeline (0 for a single command).
fn no_permission(error: &RedisError) -> Option<(usize, String)> {
    let items = error.clone().into_server_errors()?;
    items
        .iter()
        .find(|(_, e)| e.kind() == Some(ServerErrorKind::NoPerm))
        .map(|(index, e)| {
            let reason = match e.details() {
                Some(detail) => format!("{} {detail}", e.code()),
                None => e.code().to_owned(),
            };
            (*index, reason)
        })
}

/// The server's ACL refused `command` on `on` for `user`: the error names all three and the
/// server's reason. The reply of a refusal never holds a password, and neither does this error.
fn permission_denied(
    user: &str,
    command: &str,
    on: On<'_>,
    reason: String,
    error: RedisError,
) -> Error {
    let (target_kind, target) = match on {
        On::Key(k) => ("key", k),
        On::Channel(c) => ("channel", c),
        On::Pattern(p) => ("pattern", p),
    };
    Error::PermissionDenied(Box::new(PermissionDenied {
        transport: TRANSPORT,
        user: user.to_owned(),
        command: command.to_owned(),
        target_kind,
        target: target.to_owned(),
        reason,
        source: Some(Box::new(error)),
    }))
}

/// [`command_failed`], except that a refusal by the server's ACL (`NOPERM`) becomes
/// [`Error::PermissionDenied`] naming the user, the command and its key or channel.
pub(crate) fn command_failed_as(
    user: &str,
    command: &str,
    on: On<'_>,
    what: impl Into<String>,
    error: RedisError,
) -> Error {
    match no_permission(&error) {
        Some((_, reason)) => permission_denied(user, command, on, reason, error),
        None => command_failed(what, error),
    }
}

/// Turns a transport error caused by a `NOPERM` reply into [`Error::PermissionDenied`], for
/// errors built where the user was not known. `locate` names the command and its target from the
/// position of the refused command in its pipeline (0 for a single command). Every other error
/// is returned as it is.
pub(crate) fn explain_denial<'a>(
    error: Error,
    user: &str,
    locate: impl FnOnce(usize) -> Option<(&'a str, On<'a>)>,
) -> Error {
    let Error::Transport {
        source: Some(source),
        ..
    } = &error
    else {
        return error;
    };
    let Some(redis) = source.downcast_ref::<RedisError>() else {
        return error;
    };
    let Some((index, reason)) = no_permission(redis) else {
        return error;
    };
    let Some((command, on)) = locate(index) else {
        return error;
    };
    let redis = redis.clone();
    permission_denied(user, command, on, reason, redis)
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
