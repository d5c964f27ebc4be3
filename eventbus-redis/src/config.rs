//! Where the Redis server is and how connections behave: URL parsing, password redaction and
//! the connection settings of [`RedisOptions`].

use std::fmt;
use std::time::Duration;

use eventbus_core::{Error, Result};
use redis::{
    ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    TlsCertificates,
};

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
    /// How long a command (publish, ack, introspection) may wait for its answer (default 5 s);
    /// it then fails with a timeout error. Also the margin of a blocking stream read (see
    /// [`RedisOptions::block`]) and the time a pub/sub health check waits for its `PING`.
    pub response_timeout: Duration,
    /// How long establishing a connection may take, handshake included (default 5 s).
    pub connection_timeout: Duration,
    /// The longest pause between two reconnection attempts (default 2 s).
    pub reconnect_max_delay: Duration,
    /// How long a blocking stream read waits for new entries before it returns an empty batch
    /// (default 1 s). Short enough for the consumer loop to notice a shutdown quickly.
    ///
    /// A read that got no reply within `block` + [`RedisOptions::response_timeout`] is taken
    /// for a dead connection (a network black hole, a host that vanished): the consumer drops
    /// that connection, opens a new one and counts a reconnect.
    pub block: Duration,
    /// How often the pub/sub connection is checked with a `PING` (default 5 s; zero turns the
    /// check off). A `PING` not answered within [`RedisOptions::response_timeout`] marks the
    /// connection dead although it did not close (a network black hole): it is replaced, its
    /// subscriptions renewed, and a reconnect counted. Without the check, subscribers of such a
    /// connection would silently receive nothing until the operating system gives up on it.
    pub health_check_interval: Duration,
    /// Certificates for `rediss://`: set with [`RedisOptions::tls_root_certificate`] and
    /// [`RedisOptions::tls_client_identity`]. Its `Debug` output never shows a key.
    pub(crate) tls: TlsSettings,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            block: Duration::from_secs(1),
            health_check_interval: Duration::from_secs(5),
            tls: TlsSettings::default(),
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

    /// Sets [`RedisOptions::health_check_interval`].
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval;
        self
    }

    /// Trusts the CA certificate(s) in `pem` (one PEM file, possibly a bundle) for `rediss://`
    /// connections, **instead of** the system's trusted roots: the server's certificate must
    /// chain to one of them and name the host of the URL. For a private CA, as in test and
    /// on-premises deployments.
    ///
    /// Without it, `rediss://` trusts the CAs of the operating system's certificate store
    /// (`/etc/ssl/certs` on Debian), which is what managed Redis services need. A malformed PEM
    /// fails [`RedisTransport::connect_with`](crate::RedisTransport::connect_with) with
    /// [`Error::Config`], and so does setting it for a plain `redis://` URL: certificates
    /// never silently go unused.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_certificate = Some(pem.into());
        self
    }

    /// Presents a client certificate for mutual TLS (`tls-auth-clients yes` on the server):
    /// `cert_pem` holds the certificate (and any intermediate CA certificates after it),
    /// `key_pem` its private key (PKCS#8, PKCS#1 or SEC1 PEM).
    ///
    /// The key is never printed: the options' `Debug` output shows `<redacted>`. Errors as for
    /// [`RedisOptions::tls_root_certificate`].
    pub fn tls_client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client_identity = Some(ClientIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }
}

/// The TLS part of [`RedisOptions`].
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    root_certificate: Option<Vec<u8>>,
    client_identity: Option<ClientIdentity>,
}

#[derive(Clone, PartialEq, Eq)]
struct ClientIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl TlsSettings {
    fn is_empty(&self) -> bool {
        self.root_certificate.is_none() && self.client_identity.is_none()
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.client_identity.as_ref().map(|id| ClientTlsConfig {
                client_cert: id.cert_pem.clone(),
                client_key: id.key_pem.clone(),
            }),
            root_cert: self.root_certificate.clone(),
        }
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self
            .root_certificate
            .as_ref()
            .map(|pem| format!("<{} bytes of PEM>", pem.len()));
        let identity = self.client_identity.as_ref().map(|_| "<redacted>");
        f.debug_struct("TlsSettings")
            .field("root_certificate", &root)
            .field("client_identity", &identity)
            .finish()
    }
}

/// Installs ring as the process's rustls crypto provider unless the application installed one
/// (rustls 0.23 refuses to pick one by itself when none or several are compiled in).
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: one provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A parsed Redis URL and its printable, password-free form.
#[derive(Clone)]
pub(crate) struct ServerAddress {
    info: ConnectionInfo,
    redacted: String,
    /// Custom CA or client certificate of a `rediss://` address; `None` for the system roots.
    tls: Option<TlsCertificates>,
}

impl ServerAddress {
    /// Parses `redis[s]://[user[:password]@]host[:port][/db]` (and `unix://` socket paths).
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let info = url.into_connection_info().map_err(|e| {
            // The redis crate's parse errors never contain the URL; ours shows it redacted.
            Error::Config(format!("invalid Redis URL {}: {e}", redact_url(url)))
        })?;
        let redacted = redact_info(&info);
        if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
            return Err(Error::Config(format!(
                "{redacted}: eventbus-redis always verifies the server's TLS certificate, so \
                 `#insecure` is refused; trust a private CA with RedisOptions::tls_root_certificate"
            )));
        }
        Ok(ServerAddress {
            info,
            redacted,
            tls: None,
        })
    }

    /// Applies the TLS settings: checks that they fit the URL and that their PEM parses, and
    /// makes sure rustls has a crypto provider.
    pub(crate) fn with_tls(mut self, tls: &TlsSettings) -> Result<Self> {
        if !self.is_tls() {
            if tls.is_empty() {
                return Ok(self);
            }
            return Err(Error::Config(format!(
                "TLS certificates are configured, but {} is not a rediss:// URL",
                self.redacted
            )));
        }
        ensure_crypto_provider();
        if !tls.is_empty() {
            let certificates = tls.certificates();
            // Parses the PEM now, so a bad file fails here and not at each connection.
            redis::Client::build_with_tls(self.info.clone(), certificates.clone()).map_err(
                |e| {
                    Error::Config(format!(
                        "invalid TLS certificate or key for {}: {e}",
                        self.redacted
                    ))
                },
            )?;
            self.tls = Some(certificates);
        }
        Ok(self)
    }

    /// True for `rediss://`.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::TcpTls { .. })
    }

    /// The connection info with an explicit protocol: RESP3 for the pub/sub connection (push
    /// messages), RESP2 for the others (one reply shape to parse).
    pub(crate) fn client(&self, protocol: ProtocolVersion) -> Result<redis::Client> {
        let redis = self.info.redis_settings().clone().set_protocol(protocol);
        let info = self.info.clone().set_redis_settings(redis);
        let client = match &self.tls {
            Some(certificates) => redis::Client::build_with_tls(info, certificates.clone()),
            None => redis::Client::open(info),
        };
        client.map_err(|e| {
            Error::transport(
                "redis",
                format!("cannot configure a client for {}", self.redacted),
                Some(Box::new(e) as _),
            )
        })
    }

    /// The ACL user the connections authenticate as: the URL's user name, or `default`.
    pub(crate) fn user(&self) -> &str {
        match self.info.redis_settings().username() {
            Some(user) if !user.is_empty() => user,
            _ => "default",
        }
    }

    /// `redis://user:***@host:port/db`, or `rediss://…` over TLS.
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
        addr @ ConnectionAddr::TcpTls { .. } => {
            format!("rediss://{credentials}{addr}/{}", settings.db())
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
        let e = ServerAddress::parse("rediss://bob:hunter2@host:6379/x").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("rediss://bob:***@") && !msg.contains("hunter2"),
            "{msg}"
        );
        assert_eq!(redact_url("hunter2"), "<unparsable URL>");
        assert_eq!(redact_url("redis://u:p@a@h:1/0"), "redis://u:***@h:1/0");
    }

    #[test]
    fn rediss_urls_are_accepted_and_redacted() {
        let a = ServerAddress::parse("rediss://alice:s3cret@redis.example:6380/1").unwrap();
        assert!(a.is_tls());
        assert_eq!(a.redacted(), "rediss://alice:***@redis.example:6380/1");
        assert_eq!(format!("{a:?}"), "rediss://alice:***@redis.example:6380/1");
        let a = a.with_tls(&TlsSettings::default()).unwrap();
        assert!(a.client(ProtocolVersion::RESP3).is_ok());
        assert!(!ServerAddress::parse("redis://h").unwrap().is_tls());
    }

    #[test]
    fn certificate_verification_cannot_be_turned_off() {
        let e = ServerAddress::parse("rediss://:hunter2@localhost:6380/#insecure").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(
            msg.contains("#insecure") && !msg.contains("hunter2"),
            "{msg}"
        );
    }

    #[test]
    fn certificates_for_a_plain_url_are_refused() {
        let tls = RedisOptions::default()
            .tls_root_certificate(b"pem".to_vec())
            .tls;
        let e = ServerAddress::parse("redis://:hunter2@localhost")
            .unwrap()
            .with_tls(&tls)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("not a rediss:// URL") && !msg.contains("hunter2"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_pem_is_a_config_error() {
        let tls = RedisOptions::default()
            .tls_root_certificate(
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            )
            .tls;
        let e = ServerAddress::parse("rediss://:hunter2@localhost")
            .unwrap()
            .with_tls(&tls)
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(
            msg.contains("invalid TLS certificate") && !msg.contains("hunter2"),
            "{msg}"
        );
    }

    #[test]
    fn debug_never_shows_the_client_key() {
        let options = RedisOptions::default()
            .tls_root_certificate("CA-PEM")
            .tls_client_identity("CERT-PEM", "-----BEGIN PRIVATE KEY-----SECRETKEY");
        let debug = format!("{options:?}");
        assert!(
            !debug.contains("SECRETKEY") && !debug.contains("CERT-PEM"),
            "{debug}"
        );
        assert!(
            debug.contains("<redacted>") && debug.contains("<6 bytes of PEM>"),
            "{debug}"
        );
    }
}
