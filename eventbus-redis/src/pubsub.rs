//! Ephemeral events: one shared pub/sub connection per transport and a routing table from
//! channels and patterns to local subscribers.
//!
//! The connection is a RESP3 [`ConnectionManager`] with a push sender: messages arrive as push
//! values on a channel read by one router task, which copies each into the bounded queue of every
//! local subscriber of its channel (or pattern). `SUBSCRIBE`/`PSUBSCRIBE` is sent when the first
//! local subscriber of a channel appears and `UNSUBSCRIBE`/`PUNSUBSCRIBE` when the last one is
//! dropped, so a hundred handlers of one event type cost one Redis subscription.
//!
//! After a lost connection the manager reconnects with backoff and restores every subscription
//! by itself; the router logs the loss and counts it in `Stats::pubsub_disconnects` and
//! `Stats::reconnects`. Messages published while the connection was down are lost: pub/sub
//! delivers at most once. Once the connection is back, the log says why it was lost, as far as
//! the server lets anyone tell (see [`crate::disconnect`]): most often a subscriber that fell
//! behind, closed by Redis when its output buffer passed `client-output-buffer-limit pubsub`.
//!
//! A connection can also die without closing: a network black hole, a crashed host, a dropped
//! NAT entry. Nothing arrives and nothing fails, so every `RedisOptions::health_check_interval`
//! the hub sends a `PING`; one not answered within `RedisOptions::response_timeout` marks the
//! connection dead. The hub then opens a new one, subscribes it to every channel and pattern of
//! the routing table, puts it in place of the old one (dropped) and counts a disconnect and a
//! reconnect; the cause logged is a failed network. Each connection has a generation: the loss
//! of one that was replaced already is not counted again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use eventbus_core::envelope::WireBody;
use eventbus_core::queue::SubscriberQueue;
use eventbus_core::stats::Stats;
use eventbus_core::transport::{Delivery, SubscribeSpec, Subscription, Target};
use eventbus_core::{Error, Result};
use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError};
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio_util::sync::CancellationToken;

use crate::Inner;
use crate::disconnect::{Cause, ServerFacts};
use crate::error::command_failed;

/// Pause between two probes of a lost pub/sub connection.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The pub/sub connection in use; the health check puts a new one in place of a dead one.
type Current = Arc<Mutex<ConnectionManager>>;

/// A handle on the connection in use now.
fn current(conn: &Current) -> ConnectionManager {
    // A connection handle stays valid whatever panicked while the lock was held.
    conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The shared pub/sub connection of one transport.
pub(crate) struct PubSubHub {
    conn: Current,
    /// Opens a replacement connection: the client, and the settings without push sender.
    client: redis::Client,
    config: ConnectionManagerConfig,
    router: Arc<Router>,
    /// The manager knows the connection is lost and a probe runs: no health check meanwhile.
    probing: Arc<AtomicBool>,
    health_check_interval: Duration,
    response_timeout: Duration,
    routes: Arc<Routes>,
    /// Serializes changes of the Redis-side subscriptions, so that an `UNSUBSCRIBE` of the last
    /// subscriber never overtakes the `SUBSCRIBE` of a new one.
    changes: tokio::sync::Mutex<()>,
    closed: CancellationToken,
}

impl PubSubHub {
    /// Opens the pub/sub connection and starts the router task.
    pub(crate) async fn start(inner: &Inner) -> Result<Arc<PubSubHub>> {
        let client = inner.address.client(ProtocolVersion::RESP3)?;
        let routes = Arc::new(Routes::default());
        let closed = inner.closed.child_token();
        let probing = Arc::new(AtomicBool::new(false));
        // The connection's reader hands every push straight to the router: no task between
        // the socket and the subscribers' queues.
        let router = Arc::new(Router {
            routes: routes.clone(),
            conn: OnceLock::new(),
            closed: closed.clone(),
            probing: probing.clone(),
            generation: AtomicU64::new(0),
            facts: Mutex::new(None),
            server: inner.address.to_string(),
        });
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(inner.options.response_timeout))
            .set_connection_timeout(Some(inner.options.connection_timeout))
            .set_max_delay(inner.options.reconnect_max_delay)
            .set_automatic_resubscription();
        let mut conn = client
            .get_connection_manager_with_config(config.clone().set_push_sender(RouterSender {
                router: router.clone(),
                generation: 0,
            }))
            .await
            .map_err(|e| {
                command_failed(
                    format!("cannot open the pub/sub connection to {}", inner.address),
                    e,
                )
            })?;
        // What the server says of itself now, to tell later why it closed the connection.
        router.note_facts(ServerFacts::read(&mut conn).await);
        let conn: Current = Arc::new(Mutex::new(conn));
        let _ = router.conn.set(conn.clone());
        // Ends every local subscription once the transport closes.
        let (on_close, close_routes) = (closed.clone(), routes.clone());
        tokio::spawn(async move {
            on_close.cancelled().await;
            close_routes.close_all();
        });
        tracing::debug!(server = %inner.address, "pub/sub connection opened");
        let hub = Arc::new(PubSubHub {
            conn,
            client,
            config,
            router,
            probing,
            health_check_interval: inner.options.health_check_interval,
            response_timeout: inner.options.response_timeout,
            routes,
            changes: tokio::sync::Mutex::new(()),
            closed,
        });
        if !hub.health_check_interval.is_zero() {
            tokio::spawn(check_health(Arc::downgrade(&hub)));
        }
        Ok(hub)
    }

    /// True when the connection answers a `PING` within the response timeout, or fails at once
    /// (a lost connection the manager is re-establishing: not this check's business).
    async fn answers(&self) -> bool {
        let mut conn = current(&self.conn);
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<Value>(&mut conn);
        match tokio::time::timeout(self.response_timeout, ping).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => !e.is_timeout(),
            Err(_elapsed) => false,
        }
    }

    /// Opens a new connection, subscribes it to every channel and pattern that has a local
    /// subscriber and puts it in place of the current one, which is dropped.
    async fn replace_connection(&self) -> Result<()> {
        let generation = self.router.generation.load(Ordering::SeqCst) + 1;
        let sender = RouterSender {
            router: self.router.clone(),
            generation,
        };
        let mut fresh = self
            .client
            .get_connection_manager_with_config(self.config.clone().set_push_sender(sender))
            .await
            .map_err(|e| {
                command_failed(
                    format!(
                        "cannot open a new pub/sub connection to {}",
                        self.router.server
                    ),
                    e,
                )
            })?;
        // No subscription changes until the new connection carries them all.
        let _changing = self.changes.lock().await;
        let (channels, patterns) = self.routes.targets();
        let subscribed = async {
            if !channels.is_empty() {
                fresh.subscribe(&channels).await?;
            }
            if !patterns.is_empty() {
                fresh.psubscribe(&patterns).await?;
            }
            Ok::<(), redis::RedisError>(())
        };
        subscribed.await.map_err(|e| {
            command_failed(
                format!(
                    "cannot subscribe the new pub/sub connection to {}",
                    self.router.server
                ),
                e,
            )
        })?;
        self.router.note_facts(ServerFacts::read(&mut fresh).await);
        let old = {
            let mut current = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            // From now on the old connection's loss is not this hub's loss any more.
            self.router.generation.store(generation, Ordering::SeqCst);
            std::mem::replace(&mut *current, fresh)
        };
        drop(old);
        for stats in self.routes.stats() {
            Stats::incr(&stats.reconnects);
        }
        Ok(())
    }

    /// Adds a local subscriber; subscribes on Redis when it is the first of its target.
    /// Returns after Redis confirmed the subscription.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        spec: SubscribeSpec,
    ) -> Result<Box<dyn Subscription>> {
        let _changing = self.changes.lock().await;
        if self.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let subscriber = Arc::new(Subscriber {
            queue: SubscriberQueue::new(&spec),
        });
        let id = self.routes.next_id.fetch_add(1, Ordering::Relaxed);
        let first = self.routes.insert(&spec.target, id, subscriber.clone());
        if first {
            let mut conn = current(&self.conn);
            let result = match &spec.target {
                Target::Channel(c) => conn.subscribe(c).await,
                Target::Pattern(p) => conn.psubscribe(p).await,
            };
            if let Err(e) = result {
                self.routes.remove(&spec.target, id);
                return Err(command_failed(
                    format!("{} on {}", describe(&spec.target), self.router.server),
                    e,
                ));
            }
            tracing::debug!(target = ?spec.target, "subscribed");
        }
        Ok(Box::new(RedisSubscription {
            hub: self.clone(),
            target: spec.target,
            id,
            subscriber,
        }))
    }

    /// Unsubscribes on Redis when no local subscriber of `target` is left.
    async fn release(&self, target: Target) {
        let _changing = self.changes.lock().await;
        if self.closed.is_cancelled() || self.routes.has(&target) {
            return;
        }
        let mut conn = current(&self.conn);
        let result = match &target {
            Target::Channel(c) => conn.unsubscribe(c).await,
            Target::Pattern(p) => conn.punsubscribe(p).await,
        };
        match result {
            Ok(()) => tracing::debug!(?target, "unsubscribed"),
            // Harmless: messages for it find no local subscriber and are ignored.
            Err(e) => tracing::debug!(?target, error = %e, "cannot unsubscribe"),
        }
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Channel(c) => format!("SUBSCRIBE to channel \"{c}\""),
        Target::Pattern(p) => format!("PSUBSCRIBE to pattern \"{p}\""),
    }
}

/// One local subscriber: its bounded buffer, which counts and reports what it drops.
struct Subscriber {
    queue: SubscriberQueue,
}

impl Subscriber {
    fn deliver(&self, channel: &str, payload: &Bytes) {
        let delivery = Delivery {
            channel: channel.to_owned(),
            body: WireBody::Json(payload.clone()),
            entry_id: None,
            delivery_count: 1,
            token: None,
        };
        self.queue.offer(delivery, payload.len());
    }
}

/// Local subscribers by exact channel and by pattern.
#[derive(Default)]
struct Routes {
    table: Mutex<Table>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Table {
    channels: HashMap<String, Vec<(u64, Arc<Subscriber>)>>,
    patterns: HashMap<String, Vec<(u64, Arc<Subscriber>)>>,
}

impl Table {
    fn map(&mut self, target: &Target) -> &mut HashMap<String, Vec<(u64, Arc<Subscriber>)>> {
        match target {
            Target::Channel(_) => &mut self.channels,
            Target::Pattern(_) => &mut self.patterns,
        }
    }
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while holding the lock.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a subscriber; true when it is the first of its target.
    fn insert(&self, target: &Target, id: u64, subscriber: Arc<Subscriber>) -> bool {
        let mut table = self.lock();
        let list = table
            .map(target)
            .entry(target.as_str().to_owned())
            .or_default();
        list.push((id, subscriber));
        list.len() == 1
    }

    fn remove(&self, target: &Target, id: u64) {
        let mut table = self.lock();
        let map = table.map(target);
        if let Some(list) = map.get_mut(target.as_str()) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                map.remove(target.as_str());
            }
        }
    }

    fn has(&self, target: &Target) -> bool {
        self.lock().map(target).contains_key(target.as_str())
    }

    /// Hands a message to the subscribers of its pattern, or of its channel when it came
    /// without one.
    fn deliver(&self, pattern: Option<&str>, channel: &str, payload: &Bytes) {
        let table = self.lock();
        let list = match pattern {
            None => table.channels.get(channel),
            Some(p) => table.patterns.get(p),
        };
        for (_, subscriber) in list.into_iter().flatten() {
            subscriber.deliver(channel, payload);
        }
    }

    /// Every channel and every pattern with a local subscriber.
    fn targets(&self) -> (Vec<String>, Vec<String>) {
        let table = self.lock();
        (
            table.channels.keys().cloned().collect(),
            table.patterns.keys().cloned().collect(),
        )
    }

    /// Every distinct stats handle of the current subscribers (one per bus, usually one).
    fn stats(&self) -> Vec<Arc<Stats>> {
        let table = self.lock();
        let mut out: Vec<Arc<Stats>> = Vec::new();
        for (_, s) in table
            .channels
            .values()
            .chain(table.patterns.values())
            .flatten()
        {
            if !out.iter().any(|o| Arc::ptr_eq(o, s.queue.stats())) {
                out.push(s.queue.stats().clone());
            }
        }
        out
    }

    fn close_all(&self) {
        let table = self.lock();
        for (_, s) in table
            .channels
            .values()
            .chain(table.patterns.values())
            .flatten()
        {
            s.queue.close();
        }
    }
}

/// Routes the push messages of the pub/sub connection to the local subscribers; called by the
/// connection's reader for each one, so it never blocks (a short lock, a queue push).
struct Router {
    routes: Arc<Routes>,
    /// The connection, once opened (a lost one is probed through it).
    conn: OnceLock<Current>,
    closed: CancellationToken,
    /// A probe of the lost connection is running.
    probing: Arc<AtomicBool>,
    /// The generation of the connection in use: bumped by each replacement.
    generation: AtomicU64,
    /// What the server said of itself when the connection in use opened.
    facts: Mutex<Option<ServerFacts>>,
    server: String,
}

/// A channel or pattern name of a push message, borrowed when it is valid UTF-8.
fn text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        // `from_utf8` first: much cheaper than the lossy scan for the valid names of every
        // message.
        Value::BulkString(b) => Some(match std::str::from_utf8(b) {
            Ok(name) => std::borrow::Cow::Borrowed(name),
            Err(_) => String::from_utf8_lossy(b),
        }),
        Value::SimpleString(s) => Some(std::borrow::Cow::Borrowed(s)),
        other => crate::reply::text(other).map(std::borrow::Cow::Owned),
    }
}

/// The push sender given to redis-rs for the connection of one generation.
struct RouterSender {
    router: Arc<Router>,
    generation: u64,
}

impl AsyncPushSender for RouterSender {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        if self.router.closed.is_cancelled() {
            // The transport is closed: tell the connection nobody listens any more.
            return Err(SendError);
        }
        self.router.handle(info, self.generation);
        Ok(())
    }
}

impl Router {
    /// Keeps what the server said of itself (nothing when it would not say).
    fn note_facts(&self, facts: Option<ServerFacts>) {
        *self.facts.lock().unwrap_or_else(|e| e.into_inner()) = facts;
    }

    /// Counts a lost connection in every bus: a disconnect, and a reconnect (it comes back by
    /// itself, or is replaced).
    fn count_loss(&self, reconnect_too: bool) {
        for stats in self.routes.stats() {
            Stats::incr(&stats.pubsub_disconnects);
            if reconnect_too {
                Stats::incr(&stats.reconnects);
            }
        }
    }

    fn handle(self: &Arc<Self>, push: PushInfo, generation: u64) {
        let mut data = push.data.into_iter();
        match push.kind {
            PushKind::Message => {
                if let (Some(channel), Some(payload)) = (data.next(), data.next()) {
                    self.route(None, &channel, payload);
                }
            }
            PushKind::PMessage => {
                if let (Some(pattern), Some(channel), Some(payload)) =
                    (data.next(), data.next(), data.next())
                {
                    self.route(Some(&pattern), &channel, payload);
                }
            }
            PushKind::Disconnection => {
                // A replaced connection closing is no loss: its successor is in place.
                if generation == self.generation.load(Ordering::SeqCst) {
                    self.connection_lost();
                }
            }
            kind => tracing::trace!(?kind, "pub/sub push"),
        }
    }

    fn route(&self, pattern: Option<&Value>, channel: &Value, payload: Value) {
        let Some(channel) = text(channel) else {
            return;
        };
        let payload = match payload {
            Value::BulkString(b) => Bytes::from(b),
            other => match crate::reply::text(&other) {
                Some(t) => Bytes::from(t),
                None => return,
            },
        };
        let pattern = match pattern {
            Some(p) => match text(p) {
                Some(p) => Some(p),
                None => return,
            },
            None => None,
        };
        self.routes.deliver(pattern.as_deref(), &channel, &payload);
    }

    fn connection_lost(self: &Arc<Self>) {
        if self.closed.is_cancelled() {
            return;
        }
        self.count_loss(true);
        tracing::warn!(
            server = %self.server,
            "the pub/sub connection was closed (by the server, or on the way); messages \
             published until it is back are lost; resubscribing (the cause is logged once it \
             is back)"
        );
        // The manager reconnects by itself, but gives up after a few attempts when the server
        // stays away; a command sent afterwards starts a new attempt. Probe until it is back.
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(conn) = self.conn.get().cloned() else {
            return;
        };
        let router = self.clone();
        tokio::spawn(async move {
            let lost_at = std::time::Instant::now();
            if probe_until_back(&conn, &router.closed).await {
                router.explain_loss(&conn, lost_at).await;
            }
            router.probing.store(false, Ordering::SeqCst);
        });
    }

    /// Logs why the server closed the connection, from what it says of itself now and said
    /// when the connection opened.
    async fn explain_loss(&self, conn: &Current, lost_at: std::time::Instant) {
        let after = ServerFacts::read(&mut current(conn)).await;
        let before = self.facts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let cause = Cause::between(before.as_ref(), after.as_ref());
        tracing::warn!(
            server = %self.server,
            down_ms = lost_at.elapsed().as_millis() as u64,
            "the pub/sub connection is back and its subscriptions renewed; it was lost because {cause}"
        );
        if after.is_some() {
            self.note_facts(after);
        }
    }
}

/// Probes the connection until it answers (true) or the transport closes (false).
async fn probe_until_back(conn: &Current, closed: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            () = closed.cancelled() => return false,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let mut conn = current(conn);
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<Value>(&mut conn);
        let result = tokio::select! {
            () = closed.cancelled() => return false,
            r = ping => r,
        };
        match result {
            Ok(_) => return true,
            Err(e) => tracing::debug!(error = %e, "pub/sub connection still down"),
        }
    }
}

/// Every `health_check_interval`, checks that the pub/sub connection answers a `PING` and
/// replaces it when it does not; runs until the hub is dropped or the transport closed.
async fn check_health(hub: Weak<PubSubHub>) {
    let Some((interval, closed)) = hub
        .upgrade()
        .map(|h| (h.health_check_interval, h.closed.clone()))
    else {
        return;
    };
    // Set while the connection is dead and not replaced yet: retry at every interval.
    let mut dead = false;
    loop {
        tokio::select! {
            () = closed.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if hub.probing.load(Ordering::SeqCst) {
            // A known loss: the manager reconnects and the probe watches it.
            continue;
        }
        if !dead {
            if hub.answers().await || hub.probing.load(Ordering::SeqCst) {
                // It answers, or it closed meanwhile: the probe of a closed one watches it.
                continue;
            }
            hub.router.count_loss(false);
            tracing::warn!(
                server = %hub.router.server,
                timeout = ?hub.response_timeout,
                "the pub/sub connection is lost: {}; replacing it (messages published until \
                 the new one is subscribed are lost)",
                Cause::NetworkFailed
            );
            dead = true;
        }
        let replaced = tokio::select! {
            () = closed.cancelled() => return,
            r = hub.replace_connection() => r,
        };
        match replaced {
            Ok(()) => {
                dead = false;
                tracing::info!(server = %hub.router.server, "pub/sub connection replaced; subscriptions renewed");
            }
            Err(e) => tracing::debug!(error = %e, "cannot replace the pub/sub connection yet"),
        }
    }
}

/// A local pub/sub subscriber handed to the dispatcher.
struct RedisSubscription {
    hub: Arc<PubSubHub>,
    target: Target,
    id: u64,
    subscriber: Arc<Subscriber>,
}

#[async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        self.subscriber.queue.next().await
    }
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        self.routes().remove(&self.target, self.id);
        self.subscriber.queue.close();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let hub = self.hub.clone();
            let target = self.target.clone();
            runtime.spawn(async move { hub.release(target).await });
        }
    }
}

impl RedisSubscription {
    fn routes(&self) -> &Routes {
        &self.hub.routes
    }
}
