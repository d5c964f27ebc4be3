//! Dead-letter streams: `<stream>.dlq` holds what a handler group gave up on, with the reason
//! and the original entry. Written with `XADD`, listed with `XRANGE`, replayed to the original
//! channel or stream and removed (`XDEL`) in one transaction.

use eventbus_core::envelope::WireBody;
use eventbus_core::replay::Replay;
use eventbus_core::transport::{DeadLetter, DeadLetterEntry, Receipt};
use eventbus_core::{Error, Result};
use redis::Value;

use crate::Inner;
use crate::error::{On, command_failed, command_failed_as, unexpected};
use crate::publish::xadd;
use crate::reply::{self, Entry};

/// Dead-letter streams are trimmed to about this many entries.
pub(crate) const DLQ_MAX_LEN: u64 = eventbus_core::transport::DEAD_LETTER_MAX_LEN;

/// Entries read per `XRANGE` round trip when listing.
const PAGE: usize = 1000;

pub(crate) async fn write(inner: &Inner, letter: DeadLetter) -> Result<()> {
    let mut conn = inner.publisher.clone();
    let _: Value = xadd(&letter.dlq, Some(DLQ_MAX_LEN), &letter.to_fields())
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            command_failed_as(
                inner.address.user(),
                "XADD",
                On::Key(&letter.dlq),
                format!(
                    "XADD of a dead letter to \"{}\" (from \"{}\", group \"{}\")",
                    letter.dlq, letter.channel, letter.group
                ),
                e,
            )
        })?;
    Ok(())
}

async fn range(
    inner: &Inner,
    dlq: &str,
    start: &str,
    end: &str,
    count: usize,
) -> Result<Vec<Entry>> {
    let mut conn = inner.publisher.clone();
    let value: Value = redis::cmd("XRANGE")
        .arg(dlq)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await
        .map_err(|e| command_failed(format!("XRANGE of dead-letter stream \"{dlq}\""), e))?;
    reply::entries(value)
        .ok_or_else(|| unexpected(format!("XRANGE of \"{dlq}\": unexpected reply shape")))
}

fn to_entry(dlq: &str, entry: Entry) -> Option<DeadLetterEntry> {
    let fields = entry.fields?;
    Some(DeadLetterEntry {
        id: entry.id,
        letter: DeadLetter::from_fields(dlq, fields),
    })
}

pub(crate) async fn read(inner: &Inner, dlq: &str, count: usize) -> Result<Vec<DeadLetterEntry>> {
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    while out.len() < count {
        let page = PAGE.min(count - out.len());
        let entries = range(inner, dlq, &start, "+", page).await?;
        let last = entries.len() < page;
        if let Some(e) = entries.last() {
            start = format!("({}", e.id);
        }
        out.extend(entries.into_iter().filter_map(|e| to_entry(dlq, e)));
        if last {
            break;
        }
    }
    Ok(out)
}

/// Replays a dead letter as [`Replay`] says: the original entry re-added to its stream (or the
/// payload published on its channel) and the dead letter removed, in one transaction.
pub(crate) async fn replay(inner: &Inner, dlq: &str, id: &str) -> Result<Receipt> {
    let entry = range(inner, dlq, id, id, 1)
        .await?
        .into_iter()
        .next()
        .and_then(|e| to_entry(dlq, e))
        .ok_or_else(|| Error::NoSuchDeadLetter {
            dlq: dlq.to_owned(),
            id: id.to_owned(),
        })?;
    let replay = Replay::of(entry)?;
    let mut pipe = redis::pipe();
    pipe.atomic();
    let what = match &replay.body {
        WireBody::Fields(fields) => {
            let fields: Vec<_> = fields
                .iter()
                .map(|(k, v)| (std::borrow::Cow::Borrowed(k.as_str()), v.clone()))
                .collect();
            pipe.add_command(xadd(&replay.channel, None, &fields));
            format!(
                "replay of dead letter {id} from \"{dlq}\" to stream \"{}\"",
                replay.channel
            )
        }
        WireBody::Json(payload) => {
            pipe.cmd("PUBLISH").arg(&replay.channel).arg(&payload[..]);
            format!(
                "replay of dead letter {id} from \"{dlq}\" to channel \"{}\"",
                replay.channel
            )
        }
    };
    pipe.cmd("XDEL").arg(dlq).arg(id).ignore();
    let mut conn = inner.publisher.clone();
    let (value,): (Value,) = pipe
        .query_async(&mut conn)
        .await
        .map_err(|e| command_failed(what.clone(), e))?;
    let receipt = if replay.to_stream() {
        let stream_id =
            reply::text(&value).ok_or_else(|| unexpected(format!("{what}: reply {value:?}")))?;
        replay.receipt(Some(stream_id), None)
    } else {
        let receivers = reply::int(&value).and_then(|n| u64::try_from(n).ok());
        replay.receipt(None, receivers)
    };
    tracing::info!(dlq, id, channel = %replay.channel, "dead letter replayed");
    Ok(receipt)
}
