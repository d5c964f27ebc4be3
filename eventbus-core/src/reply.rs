//! Request/reply over the bus: each bus listens on its own reply channel
//! (`<namespace>eventbus.reply.<instance>-<pid>-<n>`); a request carries it in the `replyto` attribute and
//! the handler's reply comes back with the request's id as `causationid`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::bus::{Bus, PublishOptions};
use crate::envelope::{self, Encoded, Metadata, rfc3339};
use crate::error::{DecodeError, Error, Result};
use crate::event::{Durability, Request};
use crate::transport::{Outgoing, SubscribeSpec, Target};

/// The CloudEvents `type` of replies.
pub(crate) const REPLY_TYPE: &str = "eventbus.reply";
/// The header carrying a handler's error in a reply.
pub(crate) const ERROR_HEADER: &str = "error";

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Bytes, String>>>>>;

/// The reply channel of one bus and the requests waiting on it.
pub(crate) struct ReplyRouter {
    channel: String,
    waiting: Waiting,
}

fn lock(
    w: &Waiting,
) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Result<Bytes, String>>>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

async fn router(bus: &Bus) -> Result<&ReplyRouter> {
    bus.inner
        .replies
        .get_or_try_init(|| async {
            // Unique to this bus: two instances of one name must not get each other's replies.
            let instance = crate::identity::process_unique(&bus.config().instance);
            let channel = bus.key(&format!("eventbus.reply.{instance}"));
            let mut sub = bus
                .transport()
                .subscribe(SubscribeSpec {
                    target: Target::Channel(channel.clone()),
                    capacity: bus.config().subscriber_capacity,
                    capacity_bytes: bus.config().subscriber_capacity_bytes,
                    stats: bus.stats_handle(),
                })
                .await?;
            let waiting: Waiting = Arc::default();
            let routes = waiting.clone();
            // Stopped once the bus is closed, after its handlers finished: a handler that makes a
            // request while the bus drains still gets its reply. Not in `tasks`, which the
            // shutdown waits for.
            let cancel = bus.inner.closed.clone();
            tokio::spawn(async move {
                loop {
                    let delivery = tokio::select! {
                        () = cancel.cancelled() => break,
                        d = sub.next() => match d { Some(d) => d, None => break },
                    };
                    let decoded = match envelope::decode(&delivery.channel, &delivery.body) {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable reply dropped");
                            continue;
                        }
                    };
                    let Some(request_id) = decoded.meta.causation_id.as_deref() else {
                        tracing::warn!(id = %decoded.meta.id, "reply without causationid dropped");
                        continue;
                    };
                    let result = match decoded.meta.headers.get(ERROR_HEADER) {
                        Some(err) => Err(err.clone()),
                        None => Ok(decoded.data.clone()),
                    };
                    // A reply after the timeout finds nobody waiting; that is fine.
                    if let Some(tx) = lock(&routes).remove(request_id) {
                        let _ = tx.send(result);
                    }
                }
                // Waiting requests learn at once that no reply will come (`Error::Closed`).
                lock(&routes).clear();
            });
            Ok::<_, Error>(ReplyRouter { channel, waiting })
        })
        .await
}

/// Sends `request` and waits for its reply.
pub(crate) async fn request<Q: Request>(
    bus: &Bus,
    request: &Q,
    timeout: Duration,
) -> Result<Q::Reply> {
    let router = router(bus).await?;
    let opts = PublishOptions {
        reply_to: Some(router.channel.clone()),
        ..PublishOptions::default()
    };
    let out = bus.outgoing(request, &opts)?;
    let id = out.message.meta().id.clone();
    let channel = out.channel.clone();
    let (tx, rx) = oneshot::channel();
    lock(&router.waiting).insert(id.clone(), tx);
    // Removes the entry however this function ends, also when the caller drops its future.
    let _waiting = Forget {
        waiting: &router.waiting,
        id: &id,
    };
    let receipt = bus.transport().publish(out).await?;
    if Q::DESCRIPTOR.durability == Durability::Ephemeral && receipt.receivers == Some(0) {
        return Err(Error::NoResponders {
            event: Q::DESCRIPTOR.rust_type,
            channel,
        });
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(data))) => serde_json::from_slice(&data)
            .map_err(|e| Error::Decode(DecodeError::new(&channel, format!("reply: {e}"), &data))),
        Ok(Ok(Err(message))) => Err(Error::Remote {
            event: Q::DESCRIPTOR.rust_type,
            message,
        }),
        Ok(Err(_closed)) => Err(Error::Closed),
        Err(_elapsed) => Err(Error::Timeout {
            event: Q::DESCRIPTOR.rust_type,
            timeout,
        }),
    }
}

/// Drops a request's entry from the waiting map.
struct Forget<'a> {
    waiting: &'a Waiting,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(self.id);
    }
}

/// Publishes a reply (or a handler error) for `request` on `to`.
pub(crate) async fn send(
    bus: &Bus,
    to: &str,
    request: &Metadata,
    result: Result<Bytes, String>,
) -> Result<()> {
    let mut meta = Metadata {
        id: uuid::Uuid::now_v7().to_string(),
        source: bus.config().source.clone(),
        event_type: REPLY_TYPE.to_owned(),
        time: Some(rfc3339(SystemTime::now())),
        correlation_id: Some(
            request
                .correlation_id
                .clone()
                .unwrap_or_else(|| request.id.clone()),
        ),
        causation_id: Some(request.id.clone()),
        ..Metadata::default()
    };
    let data = match result {
        Ok(data) => data,
        Err(error) => {
            meta.headers.insert(ERROR_HEADER.to_owned(), error);
            Bytes::from_static(b"null")
        }
    };
    bus.transport()
        .publish(Outgoing {
            channel: to.to_owned(),
            durability: Durability::Ephemeral,
            max_len: None,
            message: Encoded::from_data(meta, &data),
        })
        .await
        .map(|_| ())
}
