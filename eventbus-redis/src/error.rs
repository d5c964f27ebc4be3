//! How Redis failures become [`eventbus_core::Error`]s: every error names the command and the
//! key, channel or group involved, and keeps the redis error as its source.

use std::error::Error as StdError;
use std::sync::Arc;

use eventbus_core::Error;
use redis::RedisError;
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
