//! Request/reply over the bus: each bus listens on its own reply channel
//! (`<namespace>eventbus.reply.<instance>-<pid>-<n>`); a request carries it in the `replyto` attribute and
//! the handler's reply comes back with the request's id as `causationid`.
//!
//! A reply without `causationid` is matched by its `correlationid` instead, which responders
//! that follow the CloudEvents correlation convention set to the request's id. That is
//! unambiguous because a request sent by [`request`] carries no `correlationid` of its own: it
//! starts its conversation, whose id is the request's id, and no other request shares it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::engine::{Engine, PublishOptions};
use crate::envelope::{self, Metadata};
use crate::error::{DecodeError, Error, Result};
use crate::event::{Durability, Request};
use crate::transport::{SubscribeSpec, Target};

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

async fn router(engine: &Engine) -> Result<&ReplyRouter> {
    engine
        .replies()
        .get_or_try_init(|| async {
            // Unique to this bus: two instances of one name must not get each other's replies.
            let instance = crate::identity::process_unique(&engine.config().instance);
            let channel = engine.key(&format!("eventbus.reply.{instance}"));
            let mut sub = engine
                .transport()
                .subscribe(SubscribeSpec {
                    target: Target::Channel(channel.clone()),
                    capacity: engine.config().subscriber_capacity,
                    capacity_bytes: engine.config().subscriber_capacity_bytes,
                    stats: engine.stats().clone(),
                })
                .await?;
            let waiting: Waiting = Arc::default();
            let routes = waiting.clone();
            // Stopped once the bus is closed, after its handlers finished: a handler that makes a
            // request while the bus drains still gets its reply. Not in `tasks`, which the
            // shutdown waits for.
            let cancel = engine.closed_token().clone();
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
                    let meta = &decoded.meta;
                    let named = meta.causation_id.as_ref().or(meta.correlation_id.as_ref());
                    let Some(request_id) = named else {
                        tracing::warn!(
                            id = %meta.id,
                            "reply dropped: it names its request neither in causationid nor in correlationid"
                        );
                        continue;
                    };
                    let result = match meta.headers.get(ERROR_HEADER) {
                        Some(err) => Err(err.clone()),
                        None => Ok(decoded.data.clone()),
                    };
                    // A reply after the timeout finds nobody waiting; that is fine.
                    match lock(&routes).remove(request_id) {
                        Some(tx) => {
                            let _ = tx.send(result);
                        }
                        None => tracing::debug!(
                            id = %meta.id,
                            request = %request_id,
                            "reply for no waiting request dropped (late, or its request id is wrong)"
                        ),
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
    engine: &Engine,
    request: &Q,
    timeout: Duration,
) -> Result<Q::Reply> {
    let router = router(engine).await?;
    // No correlationid: the reply router's fallback on it relies on that (see the module docs).
    let opts = PublishOptions {
        reply_to: Some(router.channel.clone()),
        ..PublishOptions::default()
    };
    let out = engine.encode(request, &opts)?;
    let id = out.message.meta().id.clone();
    let channel = out.channel.clone();
    let (tx, rx) = oneshot::channel();
    lock(&router.waiting).insert(id.clone(), tx);
    // Removes the entry however this function ends, also when the caller drops its future.
    let _waiting = Forget {
        waiting: &router.waiting,
        id: &id,
    };
    let receipt = engine.send(Q::DESCRIPTOR.rust_type, out).await?;
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
    engine: &Engine,
    to: &str,
    request: &Metadata,
    result: Result<Bytes, String>,
) -> Result<()> {
    let opts = PublishOptions {
        correlation_id: Some(
            request
                .correlation_id
                .clone()
                .unwrap_or_else(|| request.id.clone()),
        ),
        causation_id: Some(request.id.clone()),
        ..PublishOptions::default()
    };
    let mut meta = engine.metadata(REPLY_TYPE, None, &opts);
    let data = match result {
        Ok(data) => data,
        Err(error) => {
            meta.headers.insert(ERROR_HEADER.to_owned(), error);
            Bytes::from_static(b"null")
        }
    };
    let out = engine.encode_data(to.to_owned(), Durability::Ephemeral, meta, &data)?;
    engine.send(REPLY_TYPE, out).await.map(drop)
}

/// Sends the reply of a handled request; a failure is logged, the request times out.
pub(crate) async fn answer(
    engine: &Engine,
    to: &str,
    request: &Metadata,
    result: Result<Bytes, String>,
) {
    if let Err(e) = send(engine, to, request, result).await {
        tracing::warn!(reply_to = %to, request = %request.id, error = %e, "cannot send the reply");
    }
}
