//! Publishing: `PUBLISH` of the CloudEvents JSON document for ephemeral events, `XADD` of the
//! same document in one field, `event`, for durable ones. Everything goes through the shared multiplexed
//! connection, so concurrent publishes are pipelined on one socket; a batch is one pipeline
//! (one round trip).

use std::borrow::Cow;

use bytes::Bytes;
use eventbus_core::Durability;
use eventbus_core::Result;
use eventbus_core::transport::{Outgoing, Receipt};
use redis::Value;

use crate::Inner;
use crate::error::{command_failed, unexpected};
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

pub(crate) async fn publish(inner: &Inner, message: Outgoing) -> Result<Receipt> {
    let mut conn = inner.publisher.clone();
    let value: Value = command(&message)
        .query_async(&mut conn)
        .await
        .map_err(|e| command_failed(describe(&message), e))?;
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
    let mut conn = inner.publisher.clone();
    let what = || {
        format!(
            "pipelined publish of {} messages (first: {})",
            messages.len(),
            describe(&messages[0])
        )
    };
    let values: Vec<Value> = pipe
        .query_async(&mut conn)
        .await
        .map_err(|e| command_failed(what(), e))?;
    if values.len() != messages.len() {
        return Err(unexpected(format!("{}: {} replies", what(), values.len())));
    }
    messages
        .iter()
        .zip(&values)
        .map(|(m, v)| receipt(m, v))
        .collect()
}
