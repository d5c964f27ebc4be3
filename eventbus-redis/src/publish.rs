//! Publishing: `PUBLISH` of the CloudEvents JSON document for ephemeral events, `XADD` of the
//! same document in one field, `event`, for durable ones. Everything goes through the shared multiplexed
//! connection, so concurrent publishes are pipelined on one socket; a batch is one pipeline
//! (one round trip).
//!
//! A publish that fails says whether the event may have been written. The server refused it,
//! or it was never handed to a connection (the connection was known to be down and did not come
//! back within the deadline): a transport error, nothing was written. It was sent but no reply
//! came back (a timeout, a connection lost while waiting): [`Error::PublishOutcomeUnknown`]
//! with the event ids, so that the caller can publish again under the same ids.

use std::borrow::Cow;

use bytes::Bytes;
use eventbus_core::transport::{Outgoing, Receipt};
use eventbus_core::{Durability, Error, Result};
use redis::{RedisError, ServerError, Value};

use crate::Inner;
use crate::connection::Failure;
use crate::error::{On, TRANSPORT, command_failed, command_failed_as, unexpected};
use crate::reply;

/// `XADD key [MAXLEN ~ n] * field value...`.
pub(crate) fn xadd(
    key: &str,
    max_len: Option<u64>,
    fields: &[(Cow<'_, str>, Bytes)],
) -> redis::Cmd {
    // Sized up front: the payload is copied once into the command, without regrowing.
    let size = key.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + 64;
    let mut cmd = redis::Cmd::with_capacity(6 + 2 * fields.len(), size);
    cmd.arg("XADD").arg(key);
    if let Some(n) = max_len {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*");
    for (name, value) in fields {
        cmd.arg(name.as_ref()).arg(&value[..]);
    }
    cmd
}

/// The command that publishes `message`.
fn command(message: &Outgoing) -> redis::Cmd {
    match message.durability {
        Durability::Ephemeral => {
            let document = message.message.to_json();
            let size = message.channel.len() + document.len() + 16;
            let mut cmd = redis::Cmd::with_capacity(3, size);
            cmd.arg("PUBLISH").arg(&message.channel).arg(&document[..]);
            cmd
        }
        Durability::Durable => xadd(
            &message.channel,
            message.max_len,
            &message.message.to_fields(),
        ),
    }
}

fn describe(message: &Outgoing) -> String {
    match message.durability {
        Durability::Ephemeral => format!("PUBLISH to channel \"{}\"", message.channel),
        Durability::Durable => format!("XADD to stream \"{}\"", message.channel),
    }
}

/// The receipt of `message` from the command's reply.
fn receipt(message: &Outgoing, value: &Value) -> Result<Receipt> {
    let mut receipt = Receipt {
        event_id: message.message.meta().id().to_owned(),
        channel: message.channel.clone(),
        stream_id: None,
        receivers: None,
    };
    match message.durability {
        Durability::Ephemeral => {
            let n = reply::int(value).and_then(|n| u64::try_from(n).ok());
            receipt.receivers = Some(n.ok_or_else(|| {
                unexpected(format!("{}: unexpected reply {value:?}", describe(message)))
            })?);
        }
        Durability::Durable => {
            receipt.stream_id = Some(reply::text(value).ok_or_else(|| {
                unexpected(format!("{}: unexpected reply {value:?}", describe(message)))
            })?);
        }
    }
    Ok(receipt)
}

/// The command and the key or channel of `message`, for a refusal by the server's ACL.
fn command_on(message: &Outgoing) -> (&'static str, On<'_>) {
    match message.durability {
        Durability::Durable => ("XADD", On::Key(&message.channel)),
        Durability::Ephemeral => ("PUBLISH", On::Channel(&message.channel)),
    }
}

/// The server refused `message` (it was not written): [`Error::PermissionDenied`] for a refusal
/// of the ACL, a transport error with the server's reply otherwise.
fn refused(inner: &Inner, message: &Outgoing, error: ServerError) -> Error {
    let (command, on) = command_on(message);
    command_failed_as(
        inner.address.user(),
        command,
        on,
        describe(message),
        RedisError::from(error),
    )
}

/// The event ids of `messages`, in order.
fn event_ids(messages: &[Outgoing]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.message.meta().id().to_owned())
        .collect()
}

/// The error of a publish that got no reply: [`Error::PublishOutcomeUnknown`] when it may have
/// been written, a transport error saying it was not sent otherwise.
fn failed(what: String, messages: &[Outgoing], failure: Failure) -> Error {
    if failure.may_have_run() {
        Error::PublishOutcomeUnknown {
            transport: TRANSPORT,
            message: format!("{what}: sent, but no reply came back"),
            event_ids: event_ids(messages),
            source: Some(Box::new(failure.error)),
        }
    } else {
        command_failed(
            format!("{what}: not sent, nothing was written"),
            failure.error,
        )
    }
}

pub(crate) async fn publish(inner: &Inner, message: Outgoing) -> Result<Receipt> {
    let value = inner
        .publisher
        .run(&command(&message))
        .await
        .map_err(|f| failed(describe(&message), std::slice::from_ref(&message), f))?;
    if let Value::ServerError(e) = value {
        return Err(refused(inner, &message, e));
    }
    receipt(&message, &value)
}

pub(crate) async fn publish_all(inner: &Inner, messages: Vec<Outgoing>) -> Result<Vec<Receipt>> {
    if messages.len() <= 1 {
        let mut out = Vec::with_capacity(1);
        for m in messages {
            out.push(publish(inner, m).await?);
        }
        return Ok(out);
    }
    let mut pipe = redis::Pipeline::with_capacity(messages.len());
    for m in &messages {
        pipe.add_command(command(m));
    }
    let what = || {
        format!(
            "pipelined publish of {} messages (first: {})",
            messages.len(),
            describe(&messages[0])
        )
    };
    let mut values = inner
        .publisher
        .run_pipeline(&pipe)
        .await
        .map_err(|f| failed(what(), &messages, f))?;
    if values.len() != messages.len() {
        return Err(unexpected(format!("{}: {} replies", what(), values.len())));
    }
    let refusals = values
        .iter()
        .filter(|v| matches!(v, Value::ServerError(_)))
        .count();
    if refusals > 0 {
        let (index, error) = values
            .iter_mut()
            .enumerate()
            .find_map(|(i, v)| match std::mem::replace(v, Value::Nil) {
                Value::ServerError(e) => Some((i, e)),
                _ => None,
            })
            .expect("a refusal was counted");
        if refusals == messages.len() {
            // Nothing was written: the error of the first refusal says why.
            return Err(refused(inner, &messages[index], error));
        }
        // Some were written, some not: publishing all of them again with their ids is safe
        // for dedup handlers and writes the refused ones if the cause is gone.
        return Err(Error::PublishOutcomeUnknown {
            transport: TRANSPORT,
            message: format!(
                "{}: the server refused {refusals} of them (the first: {}), the others were \
                 written",
                what(),
                describe(&messages[index])
            ),
            event_ids: event_ids(&messages),
            source: Some(Box::new(RedisError::from(error))),
        });
    }
    messages
        .iter()
        .zip(&values)
        .map(|(m, v)| receipt(m, v))
        .collect()
}
