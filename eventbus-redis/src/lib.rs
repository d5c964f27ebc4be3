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
//! | durable event | `XADD <stream> MAXLEN ~ N * event <CloudEvents JSON>`: one field holding the same document as on pub/sub (entries with one field per attribute, CloudEvents binary mode, are read too) |
//! | durable handler group | consumer group `<group>` on the stream, created with `XGROUP CREATE … MKSTREAM` |
//! | handler instance | consumer `<instance>` of that group (`<host>-<binary>` unless configured; `<instance>-2`, … while another live process holds the name) |
//! | consumer name held by a live process | `SET <namespace.>eventbus.instance:<name> <holder> PX 10000` (a script: only when free, ours or held by a dead holder), renewed every second, deleted at shutdown |
//! | consumer that is gone | `XGROUP DELCONSUMER` when it has no pending entry (checked in the same script): at its graceful stop, or by another member once idle past `claim_idle` |
//! | handled entry | `XACK <stream> <group> <id>…`, only after the handler succeeded or gave up |
//! | dead entry of a crashed instance | claimed by a live one with `XAUTOCLAIM` after `claim_idle` |
//! | broadcast handler | `XREAD` from the position the instance started at; no group, no ack |
//! | dead letter | `XADD <stream>.dlq MAXLEN ~ 100000 * dlq.reason … <original fields>`; for an ephemeral event `<channel>.dlq`, a templated channel written as its pattern |
//! | event handled by a `dedup` group | `SET eventbus.dedup:<channel>:<group>:<event id> 1 PX <ttl>`, checked with `EXISTS` before each call |
//! | request/reply | `PUBLISH` of the request (with `replyto`); the reply, naming the request in `causationid`, comes on `eventbus.reply.<instance>-<pid>-<n>` |
//!
//! ## Connections
//!
//! * **Publishing** (and acks, dead letters, introspection) goes through one multiplexed
//!   [`ConnectionManager`](redis::aio::ConnectionManager): concurrent publishes are pipelined
//!   on one socket. It speaks RESP3, so a lost connection is noticed at once and
//!   re-established with backoff in the background; a publish sent meanwhile waits for it, but
//!   never longer than [`RedisOptions::connection_timeout`] +
//!   [`RedisOptions::response_timeout`]: then it fails with a timeout error. A connection that
//!   dies without closing (a lost NAT entry) is found by the first command that times out: a
//!   `PING` without answer within [`RedisOptions::response_timeout`] gets it replaced, so it
//!   holds up publishes and acks for at most `2 × response_timeout + connection_timeout` once a
//!   new connection can get through. Every loss is logged and counted in `Stats::reconnects`.
//! * **Pub/sub** uses one more connection per transport, opened at the first subscription. It
//!   speaks RESP3 and restores every `SUBSCRIBE`/`PSUBSCRIBE` by itself after a reconnect.
//!   Messages published while it was down are lost (pub/sub is at-most-once): each loss of the
//!   connection is logged and counted in `Stats::reconnects`. A connection that dies without
//!   closing (a network black hole) is found by a `PING` every
//!   [`RedisOptions::health_check_interval`] and replaced the same way.
//! * **Every durable consumer** owns a connection of its own without response timeout, because
//!   it blocks in `XREADGROUP … BLOCK`; a blocking read never holds up publishes. A read without
//!   a reply after [`RedisOptions::block`] + [`RedisOptions::response_timeout`] counts as a lost
//!   connection. After a lost connection it reconnects on its next read and first reads its own
//!   pending entries again: Redis may have handed it entries whose reply never arrived.
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
//! `claim_idle` (so `claim_idle` must exceed the longest handler call). Consumer names are
//! stable across restarts and leased, so that a restarted instance is that consumer again and
//! two live ones never are (see `eventbus_core::identity`).
//!
//! A graceful stop leaves nothing pending: the consumer starts no new read, ends the blocking
//! read in flight with `CLIENT UNBLOCK` (Redis put whatever that read returns in the consumer's
//! pending list when it replied), handles and acknowledges what it returned with the rest, and
//! leaves the group. `Bus::settle` waits until the bus's groups show no lag and no pending
//! entries (`XINFO GROUPS`). When a stream or group
//! vanished (`FLUSHALL`, a restart without persistence), the group is created again and counted
//! in `Stats::groups_recreated` instead of failing forever.
//!
//! A handler with `dedup` (`#[handler(dedup)]`, `HandlerOptions::dedup`) skips an entry whose
//! event id its group handled already: it checks `EXISTS` on the mark before the call and sets
//! the mark (`SET … PX <ttl>`) after a successful call, before the `XACK`. An entry handled by a
//! consumer that died before its ack is then not handled a second time by the one that claims
//! it; a consumer that dies between its handler's effects and the mark still causes a
//! duplicate.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod connection;
mod dead_letter;
mod dedup;
mod disconnect;
mod error;
mod introspect;
mod lease;
mod publish;
mod pubsub;
mod reply;
mod streams;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::transport::{
    ConsumerSpec, DeadLetter, DeadLetterEntry, LeaseState, Outgoing, Receipt, StreamConsumer,
    SubscribeSpec, Subscription, Target,
};
use eventbus_core::{Error, Result, Transport};
use redis::{AsyncConnectionConfig, ProtocolVersion};
use tokio_util::sync::CancellationToken;

pub use config::RedisOptions;
pub use eventbus_core::inspect::{ConsumerInfo, GroupInfo};

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
    /// Publishes, acks, dead letters, introspection: one multiplexed connection, every command
    /// bounded by `connection_timeout + response_timeout`.
    pub(crate) publisher: connection::SharedConnection,
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
        let closed = CancellationToken::new();
        let publisher = connection::SharedConnection::connect(
            client,
            &options,
            address.to_string(),
            closed.clone(),
        )
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
                closed,
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

    fn count_in(&self, stats: &Arc<eventbus_core::stats::Stats>) {
        self.inner.publisher.count_in(stats);
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
        let target = spec.target.clone();
        let subscribed = match self.hub().await {
            Ok(hub) => hub.subscribe(spec).await,
            Err(e) => Err(e),
        };
        subscribed.map_err(|e| {
            error::explain_denial(e, self.inner.address.user(), |_| {
                Some(match &target {
                    Target::Channel(c) => ("SUBSCRIBE", error::On::Channel(c)),
                    Target::Pattern(p) => ("PSUBSCRIBE", error::On::Pattern(p)),
                })
            })
        })
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

    /// `EXISTS <key>`.
    async fn dedup_seen(&self, key: &str) -> Result<bool> {
        self.check_open()?;
        dedup::seen(&self.inner, key).await
    }

    /// `SET <key> 1 PX <ttl in ms>`.
    async fn dedup_mark(&self, key: &str, ttl: std::time::Duration) -> Result<()> {
        self.check_open()?;
        dedup::mark(&self.inner, key, ttl).await
    }

    async fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
        replacing: Option<&str>,
    ) -> Result<LeaseState> {
        self.check_open()?;
        lease::hold(&self.inner, key, holder, ttl, replacing).await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<()> {
        self.check_open()?;
        lease::release(&self.inner, key, holder).await
    }

    /// Lag plus pending of the group (`XINFO GROUPS`).
    async fn backlog(&self, stream: &str, group: &str) -> Result<Option<u64>> {
        self.check_open()?;
        streams::backlog(self, stream, group).await
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        tracing::debug!(server = %self.inner.address, "Redis transport closed");
    }
}
