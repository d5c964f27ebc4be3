//! Replaying a dead letter, one rule for every transport: what goes back where, and which event
//! id the receipt carries. A transport only moves the bytes (re-adds them to the stream or
//! publishes them on the channel, and removes the dead letter in the same step).
//!
//! The message goes back exactly as it was received, so it keeps its event id: a group that
//! handled it already and runs a `dedup` handler skips it. A bare payload (no envelope, from
//! another producer) has no event id of its own; the dispatcher names it by its stream entry id,
//! so a replayed bare stream entry is a new event under the id of its new entry, and a bare
//! pub/sub payload gets a new id in every subscriber.

use crate::envelope::{self, WireBody};
use crate::error::{Error, Result};
use crate::transport::{DeadLetterEntry, Receipt};

/// A dead letter about to be replayed: where it goes and what is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// The dead-letter stream it is taken from.
    pub dlq: String,
    /// Its id in that stream (removed once replayed).
    pub id: String,
    /// The stream (for stream entries) or channel (pub/sub payloads) it goes back to.
    pub channel: String,
    /// What is sent: the original entry's fields (re-added to the stream) or the original
    /// pub/sub payload (published again).
    pub body: WireBody,
    /// The event id of its envelope, `None` for a bare payload.
    event_id: Option<String>,
}

impl Replay {
    /// The replay of a dead letter read from its stream. Fails with
    /// [`Error::InvalidDeadLetter`] when the letter does not name the channel it came from.
    pub fn of(entry: DeadLetterEntry) -> Result<Replay> {
        let DeadLetterEntry { id, letter } = entry;
        if letter.channel.is_empty() {
            return Err(Error::InvalidDeadLetter {
                dlq: letter.dlq,
                id,
                reason: "it does not name its channel (no dlq.channel field)",
            });
        }
        let event_id = envelope::decode(&letter.channel, &letter.body)
            .ok()
            .map(|d| d.meta.id)
            .filter(|id| !id.is_empty());
        Ok(Replay {
            dlq: letter.dlq,
            id,
            channel: letter.channel,
            body: letter.body,
            event_id,
        })
    }

    /// True when it goes back to a stream (`XADD`), false for a pub/sub payload (`PUBLISH`).
    pub fn to_stream(&self) -> bool {
        matches!(self.body, WireBody::Fields(_))
    }

    /// The receipt of the replay, given the id of the new stream entry or the number of
    /// subscribers that received it. Its event id is the envelope's; for a bare stream entry
    /// the new entry id (the id its handlers see), for a bare pub/sub payload empty (each
    /// subscriber names it itself).
    pub fn receipt(&self, stream_id: Option<String>, receivers: Option<u64>) -> Receipt {
        let event_id = match (&self.event_id, &stream_id) {
            (Some(id), _) => id.clone(),
            (None, Some(entry)) => entry.clone(),
            (None, None) => String::new(),
        };
        Receipt {
            event_id,
            channel: self.channel.clone(),
            stream_id,
            receivers,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::transport::DeadLetter;

    fn entry(channel: &str, body: WireBody) -> DeadLetterEntry {
        DeadLetterEntry {
            id: "5-0".into(),
            letter: DeadLetter {
                dlq: format!("{channel}.dlq"),
                channel: channel.into(),
                entry_id: Some("1-0".into()),
                group: "g".into(),
                handler: "h".into(),
                reason: "failed".into(),
                deliveries: 1,
                body,
            },
        }
    }

    #[test]
    fn an_envelope_keeps_its_event_id() {
        let doc = br#"{"specversion":"1.0","id":"ev-1","source":"s","type":"t","data":{}}"#;
        let fields = vec![("event".to_owned(), Bytes::from_static(doc))];
        let replay = Replay::of(entry("orders", WireBody::Fields(fields))).unwrap();
        assert!(replay.to_stream());
        let receipt = replay.receipt(Some("9-0".into()), None);
        assert_eq!(
            (receipt.event_id.as_str(), receipt.channel.as_str()),
            ("ev-1", "orders")
        );
        let replay = Replay::of(entry("live", WireBody::Json(Bytes::from_static(doc)))).unwrap();
        assert_eq!(replay.receipt(None, Some(1)).event_id, "ev-1");
    }

    #[test]
    fn a_bare_payload_is_named_by_its_new_entry_or_not_at_all() {
        let fields = vec![("data".to_owned(), Bytes::from_static(b"{}"))];
        let replay = Replay::of(entry("orders", WireBody::Fields(fields))).unwrap();
        assert_eq!(replay.receipt(Some("9-0".into()), None).event_id, "9-0");
        let replay = Replay::of(entry("live", WireBody::Json(Bytes::from_static(b"{}")))).unwrap();
        assert_eq!(replay.receipt(None, Some(2)).event_id, "");
    }

    #[test]
    fn a_letter_without_its_channel_cannot_be_replayed() {
        let err = Replay::of(entry("", WireBody::Json(Bytes::from_static(b"{}")))).unwrap_err();
        assert!(matches!(err, Error::InvalidDeadLetter { .. }), "{err}");
    }
}
