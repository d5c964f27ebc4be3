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
//! by itself; the router logs the loss and counts it in `Stats::reconnects`. Messages published
//! while the connection was down are lost: pub/sub delivers at most once.
//!
//! A connection can also die without closing: a network black hole, a crashed host, a dropped
//! NAT entry. Nothing arrives and nothing fails, so every `RedisOptions::health_check_interval`
//! the hub sends a `PING`; one not answered within `RedisOptions::response_timeout` marks the
//! connection dead. The hub then opens a new one, subscribes it to every channel and pattern of
//! the routing table, puts it in place of the old one (dropped) and counts a reconnect.

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
    /// Opens a replacement connection: the client, and the settings with the push sender of
    /// the router.
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager knows the connection is lost and a probe runs: no health check meanwhile.
    probing: Arc<AtomicBool>,
    health_check_interval: Duration,
    response_timeout: Duration,
    routes: Arc<Routes>,
    /// Serializes changes of the Redis-side subscriptions, so that an `UNSUBSCRIBE` of the last
    /// subscriber never overtakes the `SUBSCRIBE` of a new one.
    changes: tokio::sync::Mutex<()>,
    closed: CancellationToken,
    server: String,
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
        });
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(inner.options.response_timeout))
            .set_connection_timeout(Some(inner.options.connection_timeout))
            .set_max_delay(inner.options.reconnect_max_delay)
            .set_push_sender(RouterSender(router.clone()))
            .set_automatic_resubscription();
        let conn = client
            .get_connection_manager_with_config(config.clone())
            .await
            .map_err(|e| {
                command_failed(
                    format!("cannot open the pub/sub connection to {}", inner.address),
                    e,
                )
            })?;
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
            probing,
            health_check_interval: inner.options.health_check_interval,
            response_timeout: inner.options.response_timeout,
            routes,
            changes: tokio::sync::Mutex::new(()),
            closed,
            server: inner.address.to_string(),
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
        let mut fresh = self
            .client
            .get_connection_manager_with_config(self.config.clone())
            .await
            .map_err(|e| {
                command_failed(
                    format!("cannot open a new pub/sub connection to {}", self.server),
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
                    self.server
                ),
                e,
            )
        })?;
        let old = std::mem::replace(
            &mut *self.conn.lock().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
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
                    format!("{} on {}", describe(&spec.target), self.server),
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
}

/// A channel or pattern name of a push message, borrowed when it is valid UTF-8.
fn text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b)),
        Value::SimpleString(s) => Some(std::borrow::Cow::Borrowed(s)),
        other => crate::reply::text(other).map(std::borrow::Cow::Owned),
    }
}

/// The push sender given to redis-rs.
struct RouterSender(Arc<Router>);

impl AsyncPushSender for RouterSender {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        if self.0.closed.is_cancelled() {
            // The transport is closed: tell the connection nobody listens any more.
            return Err(SendError);
        }
        self.0.handle(info);
        Ok(())
    }
}

impl Router {
    fn handle(&self, push: PushInfo) {
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
            PushKind::Disconnection => self.connection_lost(),
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

    fn connection_lost(&self) {
        if self.closed.is_cancelled() {
            return;
        }
        for stats in self.routes.stats() {
            Stats::incr(&stats.reconnects);
        }
        tracing::warn!(
            "pub/sub connection lost; messages published meanwhile are lost; resubscribing"
        );
        // The manager reconnects by itself, but gives up after a few attempts when the server
        // stays away; a command sent afterwards starts a new attempt. Probe until it is back.
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(conn) = self.conn.get().cloned() else {
            return;
        };
        let closed = self.closed.clone();
        let probing = self.probing.clone();
        tokio::spawn(async move {
            probe_until_back(conn, &closed).await;
            probing.store(false, Ordering::SeqCst);
        });
    }
}

async fn probe_until_back(conn: Current, closed: &CancellationToken) {
    loop {
        tokio::select! {
            () = closed.cancelled() => return,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let mut conn = current(&conn);
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<Value>(&mut conn);
        let result = tokio::select! {
            () = closed.cancelled() => return,
            r = ping => r,
        };
        match result {
            Ok(_) => {
                tracing::info!("pub/sub connection restored; subscriptions renewed");
                return;
            }
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
            if hub.answers().await {
                continue;
            }
            tracing::warn!(
                server = %hub.server,
                timeout = ?hub.response_timeout,
                "the pub/sub connection did not answer a PING in time; replacing it \
                 (messages published meanwhile are lost)"
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
                tracing::info!(server = %hub.server, "pub/sub connection replaced; subscriptions renewed");
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
