//! # eventbus-redis
//!
//! The Redis backend of eventbus: the same typed events and handlers that run on the in-memory
//! bus, across processes and machines.
//!
//! ```no_run
//! use eventbus_core::prelude::*;
//! use eventbus_redis::RedisTransport;
//!
//! # async fn demo() -> eventbus_core::Result<()> {
//! let transport = RedisTransport::connect("redis://:secret@localhost:6379/0").await?;
//! let bus = Bus::builder().transport(transport).namespace("staging").build()?;
//! # let _ = bus; Ok(()) }
//! ```
//!
//! Requires Redis 6.2 or later (RESP3, `XAUTOCLAIM`, exclusive `XRANGE` bounds); tested with
//! Redis 7.0.
//!
//! ## How events map onto Redis
//!
//! Every key below carries the bus namespace as a prefix (`staging.`), applied by the bus.
//!
//! | eventbus | Redis |
//! |---|---|
//! | ephemeral event | `PUBLISH <channel> <CloudEvents JSON>`; the receipt holds the receiver count |
//! | ephemeral subscriber | `SUBSCRIBE <channel>` on the shared pub/sub connection |
//! | templated channel (`tenant.{tenant}.presence`) or `subscribe_pattern` | `PSUBSCRIBE tenant.*.presence` |
//! | durable event | `XADD <stream> MAXLEN ~ N * specversion 1.0 id … data <json>` |
//! | durable handler group | consumer group `<group>` on the stream, created with `XGROUP CREATE … MKSTREAM` |
//! | handler instance | consumer `<instance>` of that group (`host-pid-n` unless configured) |
//! | handled entry | `XACK <stream> <group> <id>…`, only after the handler succeeded or gave up |
//! | dead entry of a crashed instance | claimed by a live one with `XAUTOCLAIM` after `claim_idle` |
//! | broadcast handler | `XREAD` from the position the instance started at; no group, no ack |
//! | dead letter | `XADD <stream>.dlq MAXLEN ~ 100000 * dlq.reason … <original fields>` |
//! | request/reply | `PUBLISH` of the request; the reply comes on `eventbus.reply.<instance>` |
//!
//! ## Connections
//!
//! * **Publishing** (and acks, dead letters, introspection) goes through one multiplexed
//!   [`ConnectionManager`]: concurrent publishes are pipelined
//!   on one socket. It speaks RESP3, so a lost connection is noticed at once and
//!   re-established with backoff in the background; a publish sent meanwhile waits for it.
//! * **Pub/sub** uses one more connection per transport, opened at the first subscription. It
//!   speaks RESP3 and restores every `SUBSCRIBE`/`PSUBSCRIBE` by itself after a reconnect.
//!   Messages published while it was down are lost (pub/sub is at-most-once): each loss of the
//!   connection is logged and counted in `Stats::reconnects`.
//! * **Every durable consumer** owns a connection of its own without response timeout, because
//!   it blocks in `XREADGROUP … BLOCK`; a blocking read never holds up publishes. After a lost
//!   connection it reconnects on its next read.
//!
//! ## TLS
//!
//! A `rediss://[user[:password]@]host[:port][/db]` URL encrypts every connection of the
//! transport (publishing, pub/sub and each consumer's own) with rustls. The server's certificate
//! is always verified: it must chain to a trusted CA and be issued for the host of the URL (a
//! name or an IP address). The `#insecure` URL fragment, which would skip that, is refused.
//!
//! * By default the CAs of the operating system's certificate store are trusted (on Debian
//!   `/etc/ssl/certs`, package `ca-certificates`): what managed Redis services need.
//! * A private CA replaces them with [`RedisOptions::tls_root_certificate`].
//! * A server with `tls-auth-clients yes` (mutual TLS) gets a client certificate from
//!   [`RedisOptions::tls_client_identity`].
//!
//! ```no_run
//! use eventbus_core::prelude::*;
//! use eventbus_redis::{RedisOptions, RedisTransport};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let options = RedisOptions::default()
//!     .tls_root_certificate(std::fs::read("/etc/eventbus/redis-ca.crt")?)
//!     // Only for a server that requires client certificates:
//!     .tls_client_identity(
//!         std::fs::read("/etc/eventbus/client.crt")?,
//!         std::fs::read("/etc/eventbus/client.key")?,
//!     );
//! let transport =
//!     RedisTransport::connect_with("rediss://:secret@redis.internal:6380/0", options).await?;
//! let bus = Bus::builder().transport(transport).namespace("prod").build()?;
//! # let _ = bus; Ok(()) }
//! ```
//!
//! A certificate that is not trusted fails `connect` at once with an error that names the
//! server (password hidden) and the reason, for instance `cannot connect to
//! rediss://:***@redis.internal:6380/0: the server's TLS certificate was not trusted: it is not
//! signed by a trusted CA`. The certificates are read once, at `connect`, and used again for
//! every reconnection.
//!
//! rustls needs a process-wide crypto provider: unless the application installed one before
//! (`rustls::crypto::CryptoProvider::install_default`), the first `rediss://` connect installs
//! *ring*'s. An application that wants aws-lc-rs installs it before connecting.
//!
//! ## Delivery guarantees of durable events
//!
//! At least once. An entry read by a consumer stays in its group's pending list until it is
//! acknowledged. A consumer that restarts under the same name re-reads its own pending entries
//! first; entries of a consumer that died are claimed by a live one once they were idle for
//! `claim_idle` (so `claim_idle` must exceed the longest handler call). When a stream or group
//! vanished (`FLUSHALL`, a restart without persistence), the group is created again and counted
//! in `Stats::groups_recreated` instead of failing forever.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod dead_letter;
mod error;
mod introspect;
mod publish;
mod pubsub;
mod reply;
mod streams;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::transport::{
    ConsumerSpec, DeadLetter, DeadLetterEntry, Outgoing, Receipt, StreamConsumer, SubscribeSpec,
    Subscription,
};
use eventbus_core::{Error, Result, Transport};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ProtocolVersion};
use tokio_util::sync::CancellationToken;

pub use config::RedisOptions;
pub use introspect::{ConsumerInfo, GroupInfo};

use config::ServerAddress;
use pubsub::PubSubHub;

/// The Redis [`Transport`]: pub/sub for ephemeral events, Streams with consumer groups for
/// durable ones. Cheap to clone; clones share the connections.
///
/// Its `Debug` output and every log line and error show the server as
/// `redis://user:***@host:port/db` (or `rediss://…`), never the password.
#[derive(Clone)]
pub struct RedisTransport {
    inner: Arc<Inner>,
}

/// What the clones of one transport share.
pub(crate) struct Inner {
    pub(crate) address: ServerAddress,
    pub(crate) options: RedisOptions,
    /// Publishes, acks, dead letters, introspection: one multiplexed connection.
    pub(crate) publisher: ConnectionManager,
    /// Opens the consumers' own (blocking) connections.
    pub(crate) consumer_client: redis::Client,
    /// The pub/sub connection and its routing table, created at the first subscription.
    pubsub: tokio::sync::OnceCell<Arc<PubSubHub>>,
    /// Cancelled by `close()` or when the last clone is dropped: stops background tasks.
    pub(crate) closed: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTransport")
            .field("server", &self.inner.address)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl RedisTransport {
    /// Connects to the server at `url` with default [`RedisOptions`].
    ///
    /// Accepted: `redis://[user[:password]@]host[:port][/db]`, the same with `rediss://` for TLS
    /// (see [TLS](crate#tls)), and `unix:///path/to/socket`. Fails at once when the server
    /// cannot be reached, its TLS certificate is not trusted or it refuses the credentials; once
    /// connected, lost connections are re-established in the background.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connects with explicit connection settings, the TLS certificates among them.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self> {
        let address = ServerAddress::parse(url)?.with_tls(&options.tls)?;
        // RESP3 makes the manager notice a lost connection at once and reconnect in the
        // background, instead of failing the first command sent after an outage.
        let client = address.client(ProtocolVersion::RESP3)?;
        // One plain attempt first: a wrong address or password fails at once, instead of after
        // the manager's reconnection attempts.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connection_timeout))
            .set_response_timeout(Some(options.response_timeout));
        drop(
            client
                .get_multiplexed_async_connection_with_config(&probe)
                .await
                .map_err(|e| connect_failed(&address, &options, e))?,
        );
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_max_delay(options.reconnect_max_delay);
        let publisher = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| connect_failed(&address, &options, e))?;
        tracing::debug!(server = %address, "connected to Redis");
        let consumer_client = address.client(ProtocolVersion::RESP2)?;
        Ok(RedisTransport {
            inner: Arc::new(Inner {
                consumer_client,
                address,
                options,
                publisher,
                pubsub: tokio::sync::OnceCell::new(),
                closed: CancellationToken::new(),
            }),
        })
    }

    /// The server address with the password hidden: `redis://user:***@host:port/db`, or
    /// `rediss://…` over TLS.
    pub fn server(&self) -> &str {
        self.inner.address.redacted()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn hub(&self) -> Result<&Arc<PubSubHub>> {
        self.inner
            .pubsub
            .get_or_try_init(|| PubSubHub::start(&self.inner))
            .await
    }
}

/// The error of a failed first connection. Over TLS, a timeout gets a hint: a server that does
/// not speak TLS on that port leaves the handshake unanswered.
fn connect_failed(address: &ServerAddress, options: &RedisOptions, e: redis::RedisError) -> Error {
    let mut what = format!("cannot connect to {address}");
    if address.is_tls() && e.is_timeout() {
        what.push_str(&format!(
            ": no TLS connection within {:?} (a server that does not speak TLS on that port \
             fails like this too)",
            options.connection_timeout
        ));
    }
    error::command_failed(what, e)
}

#[async_trait]
impl Transport for RedisTransport {
    fn name(&self) -> &'static str {
        error::TRANSPORT
    }

    async fn publish(&self, message: Outgoing) -> Result<Receipt> {
        self.check_open()?;
        publish::publish(&self.inner, message).await
    }

    async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<Vec<Receipt>> {
        self.check_open()?;
        publish::publish_all(&self.inner, messages).await
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn Subscription>> {
        self.check_open()?;
        self.hub().await?.subscribe(spec).await
    }

    async fn consume(&self, spec: ConsumerSpec) -> Result<Arc<dyn StreamConsumer>> {
        self.check_open()?;
        streams::consume(&self.inner, spec).await
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<()> {
        self.check_open()?;
        dead_letter::write(&self.inner, letter).await
    }

    async fn dead_letters(&self, dlq: &str, count: usize) -> Result<Vec<DeadLetterEntry>> {
        self.check_open()?;
        dead_letter::read(&self.inner, dlq, count).await
    }

    async fn replay_dead_letter(&self, dlq: &str, id: &str) -> Result<Receipt> {
        self.check_open()?;
        dead_letter::replay(&self.inner, dlq, id).await
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        tracing::debug!(server = %self.inner.address, "Redis transport closed");
    }
}
