//! Where the Redis server is and how connections behave: URL parsing, password redaction and
//! the connection settings of [`RedisOptions`].

use std::fmt;
use std::time::Duration;

use eventbus_core::{Error, Result};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

/// Connection settings of a [`RedisTransport`](crate::RedisTransport).
///
/// The defaults suit most deployments; tests shorten them.
///
/// ```
/// use std::time::Duration;
/// use eventbus_redis::RedisOptions;
/// let options = RedisOptions::default()
///     .response_timeout(Duration::from_secs(2))
///     .block(Duration::from_millis(500));
/// assert_eq!(options.response_timeout, Duration::from_secs(2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// How long a command (publish, ack, introspection) may wait for its answer (default 5 s).
    /// Blocking stream reads are not subject to it: they run on their own connections.
    pub response_timeout: Duration,
    /// How long establishing a connection may take (default 5 s).
    pub connection_timeout: Duration,
    /// The longest pause between two reconnection attempts (default 2 s).
    pub reconnect_max_delay: Duration,
    /// How long a blocking stream read waits for new entries before it returns an empty batch
    /// (default 1 s). Short enough for the consumer loop to notice a shutdown quickly.
    pub block: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            block: Duration::from_secs(1),
        }
    }
}

impl RedisOptions {
    /// Sets [`RedisOptions::response_timeout`].
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets [`RedisOptions::connection_timeout`].
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Sets [`RedisOptions::reconnect_max_delay`].
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// Sets [`RedisOptions::block`].
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }
}

/// A parsed Redis URL and its printable, password-free form.
#[derive(Clone)]
pub(crate) struct ServerAddress {
    info: ConnectionInfo,
    redacted: String,
}

impl ServerAddress {
    /// Parses `redis://[user[:password]@]host[:port][/db]` (and `unix://` socket paths).
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let scheme = url.split("://").next().unwrap_or_default();
        if url.contains("://") && (scheme == "rediss" || scheme == "valkeys") {
            return Err(Error::Config(format!(
                "TLS ({scheme}://) is not supported yet by eventbus-redis; connect to {} with redis:// through a TLS proxy until it is",
                redact_url(url)
            )));
        }
        let info = url.into_connection_info().map_err(|e| {
            // The redis crate's parse errors never contain the URL; ours shows it redacted.
            Error::Config(format!("invalid Redis URL {}: {e}", redact_url(url)))
        })?;
        let redacted = redact_info(&info);
        Ok(ServerAddress { info, redacted })
    }

    /// The connection info with an explicit protocol: RESP3 for the pub/sub connection (push
    /// messages), RESP2 for the others (one reply shape to parse).
    pub(crate) fn client(&self, protocol: ProtocolVersion) -> Result<redis::Client> {
        let redis = self.info.redis_settings().clone().set_protocol(protocol);
        let info = self.info.clone().set_redis_settings(redis);
        redis::Client::open(info).map_err(|e| {
            Error::transport(
                "redis",
                format!("cannot configure a client for {}", self.redacted),
                Some(Box::new(e) as _),
            )
        })
    }

    /// `redis://user:***@host:port/db`.
    pub(crate) fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

fn redact_info(info: &ConnectionInfo) -> String {
    let settings = info.redis_settings();
    let user = settings.username().unwrap_or_default();
    let credentials = match (user, settings.password()) {
        ("", None) => String::new(),
        (user, None) => format!("{user}@"),
        (user, Some(_)) => format!("{user}:***@"),
    };
    match info.addr() {
        ConnectionAddr::Unix(path) => {
            format!(
                "unix://{credentials}{}?db={}",
                path.display(),
                settings.db()
            )
        }
        addr => format!("redis://{credentials}{addr}/{}", settings.db()),
    }
}

/// Hides the password of a URL that did not parse (or is not accepted): everything between the
/// first `:` after the scheme and the last `@` of the authority.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL at all: it may still be a password pasted by mistake.
        return "<unparsable URL>".to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_everywhere() {
        let a = ServerAddress::parse("redis://alice:s3cret@localhost:6380/2").unwrap();
        assert_eq!(a.redacted(), "redis://alice:***@localhost:6380/2");
        assert_eq!(format!("{a:?}"), "redis://alice:***@localhost:6380/2");
        let a = ServerAddress::parse("redis://:s3cret@localhost").unwrap();
        assert_eq!(a.redacted(), "redis://:***@localhost:6379/0");
        let a = ServerAddress::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!(a.redacted(), "redis://127.0.0.1:7000/0");
    }

    #[test]
    fn bad_urls_do_not_leak_the_password() {
        let e = ServerAddress::parse("redis://bob:hunter2@host:port/x").unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("bob:***@"), "{msg}");
        let e = ServerAddress::parse("rediss://bob:hunter2@host:6379").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("TLS") && !msg.contains("hunter2"), "{msg}");
        assert_eq!(redact_url("hunter2"), "<unparsable URL>");
        assert_eq!(redact_url("redis://u:p@a@h:1/0"), "redis://u:***@h:1/0");
    }
}
