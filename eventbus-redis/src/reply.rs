//! Reading Redis replies into plain data. Stream replies are parsed by hand rather than through
//! the redis crate's typed replies because those put fields in a `HashMap` (losing their order)
//! and cannot represent entries deleted while pending (`[id, nil]`).
//!
//! Both reply shapes are accepted: RESP2 (flat arrays) and RESP3 (maps).

use bytes::Bytes;
use redis::Value;

/// One stream entry as read.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The entry id (`1700000000000-0`).
    pub(crate) id: String,
    /// Its fields, in order; `None` when the entry was deleted (trimmed) while pending.
    pub(crate) fields: Option<Vec<(String, Bytes)>>,
}

/// A string-like value as text.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// An integer, also when sent as a string.
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Double(d) => Some(*d as i64),
        _ => None,
    }
}

fn into_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::from(b)),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        Value::VerbatimString { text, .. } => Some(Bytes::from(text)),
        Value::Int(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}

/// The elements of an array-like value; a map is flattened to `k1, v1, k2, v2...`.
fn elements(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Map(pairs) => Some(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Attribute { data, .. } => elements(*data),
        _ => None,
    }
}

/// Key/value pairs of a map, or of a flat `k1, v1, k2, v2...` array (`XINFO`, RESP2).
pub(crate) fn pairs(value: Value) -> Option<Vec<(String, Value)>> {
    let items = elements(value)?;
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((text(&k)?, v));
    }
    Some(out)
}

/// `[id, [f1, v1, f2, v2...]]`, or `[id, nil]` for an entry deleted while pending.
fn entry(value: Value) -> Option<Entry> {
    let mut it = elements(value)?.into_iter();
    let id = text(&it.next()?)?;
    let fields = match it.next() {
        None | Some(Value::Nil) => None,
        Some(v) => {
            let items = elements(v)?;
            let mut fields = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                fields.push((text(&k)?, into_bytes(v)?));
            }
            Some(fields)
        }
    };
    Some(Entry { id, fields })
}

/// A list of entries (`XRANGE`, the entries part of `XREAD`/`XAUTOCLAIM`).
pub(crate) fn entries(value: Value) -> Option<Vec<Entry>> {
    match value {
        Value::Nil => Some(Vec::new()),
        v => elements(v)?.into_iter().map(entry).collect(),
    }
}

/// The reply of `XREAD`/`XREADGROUP` on one stream: nil on timeout, else
/// `[[key, entries]]` (RESP2) or `{key: entries}` (RESP3).
pub(crate) fn read_reply(value: Value) -> Option<Vec<Entry>> {
    let value = match value {
        Value::Nil => return Some(Vec::new()),
        Value::Map(streams) => {
            return streams
                .into_iter()
                .next()
                .map_or(Some(Vec::new()), |(_, e)| entries(e));
        }
        v => v,
    };
    let mut streams = elements(value)?.into_iter();
    let Some(stream) = streams.next() else {
        return Some(Vec::new());
    };
    let mut parts = elements(stream)?.into_iter();
    let _key = parts.next()?;
    entries(parts.next()?)
}

/// The reply of `XAUTOCLAIM`: next cursor, claimed entries, and (Redis 7) the ids of entries
/// that were deleted meanwhile and removed from the pending list.
pub(crate) struct AutoClaim {
    pub(crate) cursor: String,
    pub(crate) claimed: Vec<Entry>,
    pub(crate) deleted: Vec<String>,
}

pub(crate) fn auto_claim(value: Value) -> Option<AutoClaim> {
    let mut it = elements(value)?.into_iter();
    let cursor = text(&it.next()?)?;
    let claimed = entries(it.next()?)?;
    let deleted = match it.next() {
        Some(v) => elements(v)?.iter().filter_map(text).collect(),
        None => Vec::new(),
    };
    Some(AutoClaim {
        cursor,
        claimed,
        deleted,
    })
}

/// The owner and delivery count in the extended `XPENDING key group id id 1` reply:
/// `[[id, consumer, idle, count]]`; `None` when the entry is no longer pending.
pub(crate) fn pending_entry(value: Value) -> Option<(String, u32)> {
    let first = elements(value)?.into_iter().next()?;
    let fields = elements(first)?;
    let consumer = text(fields.get(1)?)?;
    let count = u32::try_from(int(fields.get(3)?)?).ok()?;
    Some((consumer, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_resp2_and_resp3_stream_replies() {
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("data"), bulk("{}"), bulk("id"), bulk("x")]),
        ]);
        let deleted = Value::Array(vec![bulk("2-0"), Value::Nil]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![entry.clone(), deleted.clone()]),
        ])]);
        let got = read_reply(resp2).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "1-0");
        let fields = got[0].fields.as_ref().unwrap();
        assert_eq!(fields[0], ("data".to_owned(), Bytes::from_static(b"{}")));
        assert_eq!(fields[1].0, "id");
        assert!(got[1].fields.is_none());
        let resp3 = Value::Map(vec![(bulk("s"), Value::Array(vec![entry]))]);
        assert_eq!(read_reply(resp3).unwrap().len(), 1);
        assert!(read_reply(Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn reads_autoclaim_and_pending() {
        let v = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![]),
            Value::Array(vec![bulk("3-0")]),
        ]);
        let c = auto_claim(v).unwrap();
        assert_eq!(c.cursor, "0-0");
        assert_eq!(c.deleted, vec!["3-0".to_owned()]);
        let p = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            bulk("c"),
            Value::Int(10),
            Value::Int(3),
        ])]);
        assert_eq!(pending_entry(p), Some(("c".to_owned(), 3)));
        assert_eq!(pending_entry(Value::Array(vec![])), None);
    }
}
