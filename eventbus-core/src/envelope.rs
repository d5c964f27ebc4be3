//! The envelope every message carries, and the codec that writes and reads it.
//!
//! The wire format is [CloudEvents 1.0](https://github.com/cloudevents/spec) in JSON:
//!
//! * on a pub/sub channel, one JSON document (structured mode):
//!   `{"specversion":"1.0","id":"…","source":"billing","type":"shop.orders.OrderCreated",
//!   "time":"2026-11-24T12:00:00.000000Z","datacontenttype":"application/json","dataversion":1,
//!   "correlationid":"…","data":{…}}`
//! * in a stream entry, the same document in the one field `event`.
//!
//! A payload without envelope (a JSON document with no `specversion`, as sent by
//! `redis-cli PUBLISH ch '{"order_id":"o-1"}'`, or a stream entry with only a `data` field) is
//! accepted as `data`. A stream entry whose attributes are separate fields (`specversion`, `id`,
//! `type`, …, `data`: CloudEvents binary mode) is accepted as well. An envelope may carry its
//! payload JSON base64-encoded in `data_base64` instead of `data`, as CloudEvents SDKs write
//! binary data. Both transports (memory and Redis) go through this one codec, so a type that
//! does not survive the trip fails in a unit test, not in production.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::DecodeError;

/// The CloudEvents spec version written and accepted.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of `data`.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// The stream entry field that holds the whole CloudEvents JSON document.
pub const EVENT_FIELD: &str = "event";

/// The attributes of one message: CloudEvents context attributes plus extensions.
///
/// Read them through the accessors; build one with [`Metadata::new`] and the `with_*` methods
/// (a foreign producer in a test, a hand-made envelope). The fields are private so that how
/// they are stored (owned, shared or borrowed from the received bytes) can change without
/// changing this API.
///
/// ```
/// use eventbus_core::Metadata;
/// let meta = Metadata::new("e-1", "checkout", "shop.orders.OrderCreated")
///     .with_correlation_id("conversation-7")
///     .with_header("tenant", "acme");
/// assert_eq!(meta.event_type(), "shop.orders.OrderCreated");
/// assert_eq!(meta.correlation_id(), Some("conversation-7"));
/// assert_eq!(meta.header("tenant"), Some("acme"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub(crate) id: String,
    // Shared: the same for every event a bus publishes.
    pub(crate) source: Arc<str>,
    // Borrowed from the event type's descriptor on publish.
    pub(crate) event_type: Cow<'static, str>,
    pub(crate) time: Option<String>,
    pub(crate) data_content_type: Option<String>,
    pub(crate) data_version: Option<u32>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) causation_id: Option<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
}

impl Metadata {
    /// Attributes with an id, a source and a type; everything else unset.
    pub fn new(
        id: impl Into<String>,
        source: impl Into<String>,
        event_type: impl Into<String>,
    ) -> Self {
        Metadata {
            id: id.into(),
            source: Arc::from(source.into()),
            event_type: Cow::Owned(event_type.into()),
            ..Metadata::default()
        }
    }

    /// Unique id of this event (a UUID v7 when published by eventbus); empty for a bare payload
    /// before the dispatcher names it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The service that published it (configured on the bus; defaults to the binary's name).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The CloudEvents `type`: the event name (`shop.orders.OrderCreated`).
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// When it was published, RFC 3339 in UTC.
    pub fn time(&self) -> Option<&str> {
        self.time.as_deref()
    }

    /// The content type of `data` when it is not plain `application/json` (`None`: plain JSON,
    /// what eventbus writes).
    pub fn data_content_type(&self) -> Option<&str> {
        self.data_content_type.as_deref()
    }

    /// The payload schema version (`#[event(version = N)]`), extension `dataversion`.
    pub fn data_version(&self) -> Option<u32> {
        self.data_version
    }

    /// The id shared by every event of one conversation, extension `correlationid`.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The id of the event whose handler published this one, extension `causationid`.
    pub fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }

    /// Where the reply to a request goes, extension `replyto`.
    pub fn reply_to(&self) -> Option<&str> {
        self.reply_to.as_deref()
    }

    /// A free header (another extension attribute). A value that is not a JSON string keeps its
    /// JSON text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Every free header, sorted by name.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets the time (RFC 3339).
    pub fn with_time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// Sets the content type of `data`.
    pub fn with_data_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.data_content_type = Some(content_type.into());
        self
    }

    /// Sets the payload schema version.
    pub fn with_data_version(mut self, version: u32) -> Self {
        self.data_version = Some(version);
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets the reply channel.
    pub fn with_reply_to(mut self, channel: impl Into<String>) -> Self {
        self.reply_to = Some(channel.into());
        self
    }

    /// Sets a free header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// The attribute names the codec gives a meaning to; every other one is a header.
const KNOWN: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "dataversion",
    "correlationid",
    "causationid",
    "replyto",
    "data",
];

/// True for attribute names that cannot be used as free headers.
pub fn is_reserved_attribute(name: &str) -> bool {
    KNOWN.contains(&name) || name == "data_base64" || name == "dataschema" || name == "subject"
}

/// An encoded event ready for a transport: its attributes and the CloudEvents JSON document
/// written once, with the payload JSON as a slice of that document (no copy per transport).
#[derive(Clone, Debug)]
pub struct Encoded {
    meta: Metadata,
    document: Bytes,
    data: Range<usize>,
}

impl Encoded {
    /// Serializes `event` as the payload of a message with these attributes, straight into the
    /// document's buffer.
    pub fn new<T: serde::Serialize>(meta: Metadata, event: &T) -> serde_json::Result<Self> {
        let mut out = Vec::with_capacity(512);
        let start = write_prefix(&mut out, &meta);
        serde_json::to_writer(&mut out, event)?;
        Ok(Self::finish(meta, out, start))
    }

    /// A message whose payload is already JSON (written as is, even if it is not valid JSON:
    /// tests use this to play a foreign producer).
    pub fn from_data(meta: Metadata, data: &[u8]) -> Self {
        let mut out = Vec::with_capacity(data.len() + 256);
        let start = write_prefix(&mut out, &meta);
        out.extend_from_slice(data);
        Self::finish(meta, out, start)
    }

    fn finish(meta: Metadata, mut out: Vec<u8>, start: usize) -> Self {
        let end = out.len();
        out.push(b'}');
        Encoded {
            meta,
            document: Bytes::from(out),
            data: start..end,
        }
    }

    /// The attributes.
    pub fn meta(&self) -> &Metadata {
        &self.meta
    }

    /// The payload JSON (a slice of the document).
    pub fn data(&self) -> Bytes {
        self.document.slice(self.data.clone())
    }

    /// The size of the payload JSON in bytes.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Structured mode: the CloudEvents JSON document (a pub/sub payload).
    pub fn to_json(&self) -> Bytes {
        self.document.clone()
    }

    /// Stream mode: the entry's one field, [`EVENT_FIELD`], holding the same CloudEvents JSON
    /// document as [`Encoded::to_json`]. One field instead of one per attribute: Redis stores,
    /// sends and parses one value per entry (an entry with 8 fields halves the stream throughput
    /// of Redis and of the client parsing the reply), and every carrier holds one format.
    pub fn to_fields(&self) -> Vec<(Cow<'static, str>, Bytes)> {
        vec![(Cow::Borrowed(EVENT_FIELD), self.to_json())]
    }

    /// Binary mode (the layout of earlier versions, still decoded): attributes as entry fields,
    /// `data` last. Every attribute value is a slice of one buffer.
    pub fn to_attribute_fields(&self) -> Vec<(Cow<'static, str>, Bytes)> {
        let mut buf = Vec::with_capacity(192);
        let mut spans = Vec::with_capacity(10 + self.meta.headers.len());
        self.for_each_attribute(|name, value| {
            let start = buf.len();
            match value {
                AttrValue::Str(s) => buf.extend_from_slice(s.as_bytes()),
                AttrValue::Int(n) => write_u32(&mut buf, n),
            }
            let name = match KNOWN.iter().find(|k| **k == name) {
                Some(k) => Cow::Borrowed(*k),
                None => Cow::Owned(name.to_owned()),
            };
            spans.push((name, start..buf.len()));
        });
        let buf = Bytes::from(buf);
        let mut fields: Vec<(Cow<'static, str>, Bytes)> =
            spans.into_iter().map(|(k, r)| (k, buf.slice(r))).collect();
        fields.push((Cow::Borrowed("data"), self.data()));
        fields
    }

    fn for_each_attribute<'a>(&'a self, f: impl FnMut(&'a str, AttrValue<'a>)) {
        for_each_attribute(&self.meta, f)
    }
}

/// Writes `{` and every attribute of `meta` followed by `"data":`; returns where `data` starts.
/// The same attributes in the same order as `for_each_attribute`, with the constant names
/// written as they are (only values, and the names of free headers, are checked for escapes).
fn write_prefix(out: &mut Vec<u8>, m: &Metadata) -> usize {
    out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    write_json_str(out, &m.id);
    out.extend_from_slice(br#","source":"#);
    write_json_str(out, &m.source);
    out.extend_from_slice(br#","type":"#);
    write_json_str(out, &m.event_type);
    if let Some(t) = &m.time {
        out.extend_from_slice(br#","time":"#);
        write_json_str(out, t);
    }
    out.extend_from_slice(br#","datacontenttype":"#);
    write_json_str(
        out,
        m.data_content_type.as_deref().unwrap_or(JSON_CONTENT_TYPE),
    );
    if let Some(v) = m.data_version {
        out.extend_from_slice(br#","dataversion":"#);
        write_u32(out, v);
    }
    for (name, value) in [
        (&br#","correlationid":"#[..], &m.correlation_id),
        (br#","causationid":"#, &m.causation_id),
        (br#","replyto":"#, &m.reply_to),
    ] {
        if let Some(v) = value {
            out.extend_from_slice(name);
            write_json_str(out, v);
        }
    }
    for (k, v) in &m.headers {
        if !is_reserved_attribute(k) {
            out.push(b',');
            write_json_str(out, k);
            out.push(b':');
            write_json_str(out, v);
        }
    }
    out.extend_from_slice(br#","data":"#);
    out.len()
}

fn for_each_attribute<'a>(m: &'a Metadata, mut f: impl FnMut(&'a str, AttrValue<'a>)) {
    f("specversion", AttrValue::Str(SPEC_VERSION));
    f("id", AttrValue::Str(&m.id));
    f("source", AttrValue::Str(&m.source));
    f("type", AttrValue::Str(&m.event_type));
    if let Some(t) = &m.time {
        f("time", AttrValue::Str(t));
    }
    f(
        "datacontenttype",
        AttrValue::Str(m.data_content_type.as_deref().unwrap_or(JSON_CONTENT_TYPE)),
    );
    if let Some(v) = m.data_version {
        f("dataversion", AttrValue::Int(v));
    }
    if let Some(v) = &m.correlation_id {
        f("correlationid", AttrValue::Str(v));
    }
    if let Some(v) = &m.causation_id {
        f("causationid", AttrValue::Str(v));
    }
    if let Some(v) = &m.reply_to {
        f("replyto", AttrValue::Str(v));
    }
    for (k, v) in &m.headers {
        if !is_reserved_attribute(k) {
            f(k, AttrValue::Str(v));
        }
    }
}

enum AttrValue<'a> {
    Str(&'a str),
    Int(u32),
}

fn write_u32(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // serde_json cannot fail on a &str into a Vec.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// True when `s` holds a byte JSON must escape: a control character, `"` or `\\`. Eight bytes
/// at a time (the attribute strings are ids, names and timestamps: mostly plain).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is below `n` (n <= 128): the classic "has less" bit trick.
    let has_below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH != 0;
    let has_byte = |v: u64, b: u64| has_below(v ^ (ONES * b), 1);
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        if has_below(v, 0x20) || has_byte(v, u64::from(b'"')) || has_byte(v, u64::from(b'\\')) {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A message as a transport received it.
#[derive(Clone, Debug, PartialEq)]
pub enum WireBody {
    /// One JSON document (pub/sub payload): a CloudEvents envelope or a bare payload.
    Json(Bytes),
    /// Stream entry fields.
    Fields(Vec<(String, Bytes)>),
}

impl WireBody {
    /// Total size in bytes of the payload (all field names and values for a stream entry).
    pub fn len(&self) -> usize {
        match self {
            WireBody::Json(b) => b.len(),
            WireBody::Fields(f) => f.iter().map(|(k, v)| k.len() + v.len()).sum(),
        }
    }

    /// True when there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A printable excerpt for logs and dead letters.
    pub fn excerpt_source(&self) -> Cow<'_, [u8]> {
        match self {
            WireBody::Json(b) => Cow::Borrowed(b),
            WireBody::Fields(f) => Cow::Owned(
                f.iter()
                    .flat_map(|(k, v)| {
                        [k.as_bytes(), b"=", v, b" "]
                            .into_iter()
                            .flatten()
                            .copied()
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            ),
        }
    }
}

/// A decoded envelope: attributes and the raw JSON of `data` (not yet parsed into a type).
#[derive(Clone, Debug)]
pub struct Decoded {
    /// The attributes. For a bare payload `id`, `source` and `event_type` are empty.
    pub meta: Metadata,
    /// The JSON of the payload, a slice of the received bytes.
    pub data: Bytes,
}

impl Decoded {
    /// Parses the payload into `T`, naming the channel in the error.
    pub fn payload<T: DeserializeOwned>(&self, channel: &str) -> Result<T, DecodeError> {
        serde_json::from_slice(&self.data).map_err(|e| DecodeError::new(channel, e, &self.data))
    }
}

/// Decodes what a transport received on `channel`.
pub fn decode(channel: &str, body: &WireBody) -> Result<Decoded, DecodeError> {
    match body {
        WireBody::Json(bytes) => decode_json(channel, bytes),
        WireBody::Fields(fields) => decode_fields(channel, fields),
    }
}

fn decode_json(channel: &str, bytes: &Bytes) -> Result<Decoded, DecodeError> {
    if let Some(decoded) = compact::decode(channel, bytes) {
        return decoded;
    }
    decode_general(channel, bytes)
}

/// Any JSON document: a CloudEvents envelope in any member order and spacing, or a bare payload.
fn decode_general(channel: &str, bytes: &Bytes) -> Result<Decoded, DecodeError> {
    let is_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if is_object {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let raw = de
            .deserialize_map(EnvelopeVisitor)
            .and_then(|r| de.end().map(|()| r))
            .map_err(|e| DecodeError::new(channel, e, bytes))?;
        if let Some(spec) = raw.spec {
            let mut meta = Metadata::default();
            let mut payload = RawPayload::default();
            let mut attrs = raw.attrs.into_iter().map(|(k, v)| (k, Attr::Json(v)));
            apply_attributes(channel, bytes, &spec, &mut attrs, &mut meta, &mut payload)?;
            let data = payload_of(
                channel,
                bytes,
                payload.data.map(|d| bytes.slice_ref(d)),
                payload.base64,
            )?;
            let data = data.unwrap_or_else(|| Bytes::from_static(b"null"));
            return Ok(Decoded { meta, data });
        }
    }
    // A bare payload: the whole document is `data`. Checked to be JSON at all so that garbage
    // is reported as undecodable here rather than by the typed parse.
    serde_json::from_slice::<de::IgnoredAny>(bytes)
        .map_err(|e| DecodeError::new(channel, format!("not JSON: {e}"), bytes))?;
    Ok(Decoded {
        meta: Metadata::default(),
        data: bytes.clone(),
    })
}

fn decode_fields(channel: &str, fields: &[(String, Bytes)]) -> Result<Decoded, DecodeError> {
    // The layout eventbus writes: one `event` field with the structured document (the last one
    // wins if a foreign producer wrote several).
    if let Some((_, event)) = fields.iter().rev().find(|(k, _)| k == EVENT_FIELD) {
        return decode_json(channel, event);
    }
    let excerpt = || {
        WireBody::Fields(fields.to_vec())
            .excerpt_source()
            .into_owned()
    };
    // With duplicate `data` fields (Redis accepts them) the last one wins, in both branches.
    let data_field = fields
        .iter()
        .rev()
        .find(|(k, _)| k == "data")
        .map(|(_, v)| v);
    let spec = fields
        .iter()
        .find(|(k, _)| k == "specversion")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let mut meta = Metadata::default();
    let mut data = data_field.cloned();
    if let Some(spec) = spec {
        let mut attrs = fields
            .iter()
            .filter(|(k, _)| k != "specversion" && k != "data")
            .map(|(k, v)| (Cow::Borrowed(k.as_str()), Attr::Text(v)));
        let whole = data_field.map_or(&b""[..], |d| d.as_ref());
        let mut payload = RawPayload::default();
        apply_attributes(channel, whole, &spec, &mut attrs, &mut meta, &mut payload)?;
        // Attributes written one per field, as a structured event's members would be, may hold
        // the payload in `data_base64` too (a field can hold any bytes, so `data` is simpler).
        data = payload_of(channel, b"", data, payload.base64)
            .map_err(|e| DecodeError::new(channel, e.reason, &excerpt()))?;
    }
    let Some(data) = data else {
        return Err(DecodeError::new(
            channel,
            "stream entry has neither an `event` nor a `data` field",
            &excerpt(),
        ));
    };
    // `data` is parsed once, by the handler's typed decode, which reports malformed JSON.
    Ok(Decoded { meta, data })
}

/// Where an envelope's attributes put its payload: `data` (JSON as it is) or `data_base64`.
#[derive(Default)]
struct RawPayload<'a> {
    data: Option<&'a [u8]>,
    base64: Option<Cow<'a, str>>,
}

/// Base64 as RFC 4648 writes it (the standard alphabet), with or without the trailing `=`.
const BASE64: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;

/// The payload JSON of an envelope: `data` as it is, or `data_base64` decoded (what CloudEvents
/// SDKs write when the data is bytes: the typed parse then reads the decoded bytes as JSON).
/// `None` when the envelope has neither.
fn payload_of(
    channel: &str,
    whole: &[u8],
    data: Option<Bytes>,
    base64: Option<Cow<'_, str>>,
) -> Result<Option<Bytes>, DecodeError> {
    match (data, base64) {
        (Some(_), Some(_)) => Err(DecodeError::new(
            channel,
            "the envelope has both `data` and `data_base64`; CloudEvents allows only one of them",
            whole,
        )),
        (data, None) => Ok(data),
        (None, Some(text)) => BASE64
            .decode(text.as_bytes())
            .map(|bytes| Some(Bytes::from(bytes)))
            .map_err(|e| {
                DecodeError::new(
                    channel,
                    format!("`data_base64` is not valid base64: {e}"),
                    whole,
                )
            }),
    }
}

/// An attribute value: raw JSON (structured mode) or plain text (stream field).
enum Attr<'a> {
    Json(&'a RawValue),
    Text(&'a [u8]),
    /// Text already checked to be UTF-8 without escapes (the compact fast path).
    Plain(&'a str),
}

impl<'a> Attr<'a> {
    fn text(&self) -> Option<String> {
        self.cow().map(Cow::into_owned)
    }

    /// The value as text, borrowed where no unescaping or repair is needed.
    fn cow(&self) -> Option<Cow<'a, str>> {
        match self {
            Attr::Json(raw) => {
                let s: &'a str = raw.get();
                if s.len() >= 2 && s.starts_with('"') && !s.contains('\\') {
                    s.get(1..s.len() - 1).map(Cow::Borrowed)
                } else if s.starts_with('"') {
                    serde_json::from_str::<String>(s).ok().map(Cow::Owned)
                } else if s == "null" {
                    None
                } else {
                    Some(Cow::Borrowed(s))
                }
            }
            Attr::Text(b) => Some(String::from_utf8_lossy(b)),
            Attr::Plain(t) => Some(Cow::Borrowed(t)),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        match self {
            Attr::Json(raw) => raw.get().as_bytes(),
            Attr::Text(b) => b,
            Attr::Plain(t) => t.as_bytes(),
        }
    }
}

fn apply_attributes<'a>(
    channel: &str,
    whole: &[u8],
    spec: &str,
    attrs: &mut dyn Iterator<Item = (Cow<'a, str>, Attr<'a>)>,
    meta: &mut Metadata,
    payload: &mut RawPayload<'a>,
) -> Result<(), DecodeError> {
    if spec != SPEC_VERSION {
        return Err(DecodeError::new(
            channel,
            format!("unsupported CloudEvents specversion {spec:?} (expected \"1.0\")"),
            whole,
        ));
    }
    for (name, value) in attrs {
        let text = || value.text().unwrap_or_default();
        match &*name {
            "data" => payload.data = Some(value.bytes()),
            "id" => meta.id = text(),
            "source" => meta.source = value.cow().map_or_else(Arc::default, |s| Arc::from(&*s)),
            "type" => meta.event_type = Cow::Owned(text()),
            "time" => meta.time = value.text(),
            "datacontenttype" => {
                let ct = value.cow().unwrap_or_default();
                if !is_json_content_type(&ct) {
                    return Err(DecodeError::new(
                        channel,
                        format!("datacontenttype {ct:?} is not JSON"),
                        whole,
                    ));
                }
                // `None` stands for `application/json`, what eventbus writes when it is unset.
                meta.data_content_type = (ct != JSON_CONTENT_TYPE).then(|| ct.into_owned());
            }
            "dataversion" => {
                meta.data_version = value.cow().and_then(|v| v.trim_matches('"').parse().ok())
            }
            "correlationid" => meta.correlation_id = value.text(),
            "causationid" => meta.causation_id = value.text(),
            "replyto" => meta.reply_to = value.text(),
            "data_base64" => {
                // A JSON string (or `null`: absent); anything else is not base64 text.
                if matches!(&value, Attr::Json(raw) if !raw.get().starts_with('"') && raw.get() != "null")
                {
                    return Err(DecodeError::new(
                        channel,
                        "`data_base64` is not a string",
                        whole,
                    ));
                }
                payload.base64 = value.cow();
            }
            _ => {
                if let Some(v) = value.text() {
                    meta.headers.insert(name.into_owned(), v);
                }
            }
        }
    }
    if meta.id.is_empty() || meta.event_type.is_empty() {
        return Err(DecodeError::new(
            channel,
            "CloudEvents envelope without `id` or `type`",
            whole,
        ));
    }
    Ok(())
}

fn is_json_content_type(ct: &str) -> bool {
    let base = ct.split(';').next().unwrap_or("").trim();
    base == "application/json" || base == "text/json" || base.ends_with("+json")
}

/// The fast path for the layout [`Encoded`] writes: no whitespace, attribute values that are
/// plain strings (no escapes) or digits, and `data` an object or array as the last member. It
/// finds where `data` ends by its brackets and strings alone and leaves the payload's full
/// check to the typed parse, which reads it anyway: the payload is scanned once, not twice.
/// Anything else (whitespace, escapes, `null`, `data` first or scalar, `data_base64`, more
/// attributes than fit) is declined and read by the general decoder, so both agree on every
/// input they accept.
mod compact {
    use super::*;

    /// At most this many attributes before `data`; more is declined.
    const MAX_ATTRS: usize = 24;

    pub(super) fn decode(channel: &str, bytes: &Bytes) -> Option<Result<Decoded, DecodeError>> {
        // UTF-8 once for the whole document, as the general decoder demands (a typed parse would
        // not look inside the strings it ignores). Every slice below starts and ends next to an
        // ASCII delimiter, so `str::get` never falls between the bytes of a character.
        let doc = std::str::from_utf8(bytes).ok()?;
        let raw = doc.as_bytes();
        if raw.first() != Some(&b'{') || raw.last() != Some(&b'}') {
            return None;
        }
        let mut attrs: [(&str, &str); MAX_ATTRS] = [("", ""); MAX_ATTRS];
        let mut n = 0;
        let mut spec = None;
        let mut pos = 1;
        loop {
            let key = string(doc, &mut pos)?;
            if raw.get(pos) != Some(&b':') {
                return None;
            }
            pos += 1;
            if key == "data" {
                let end = container_end(raw, pos)?;
                // `data` must be the last member: only the closing brace may follow.
                if end + 1 != raw.len() {
                    return None;
                }
                let spec = spec?;
                let mut meta = Metadata::default();
                let mut it = attrs[..n]
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(*k), Attr::Plain(v)));
                let mut payload = RawPayload::default();
                let applied =
                    apply_attributes(channel, raw, spec, &mut it, &mut meta, &mut payload);
                return Some(applied.map(|()| Decoded {
                    meta,
                    data: bytes.slice(pos..end),
                }));
            }
            if key == "data_base64" {
                // Its payload is decoded by the general decoder alone.
                return None;
            }
            let value = match raw.get(pos)? {
                b'"' => string(doc, &mut pos)?,
                b'0'..=b'9' => {
                    let start = pos;
                    while raw.get(pos).is_some_and(u8::is_ascii_digit) {
                        pos += 1;
                    }
                    // JSON allows no leading zero (`01`): the general decoder refuses it.
                    if pos - start > 1 && raw[start] == b'0' {
                        return None;
                    }
                    doc.get(start..pos)?
                }
                _ => return None,
            };
            if key == "specversion" {
                spec = Some(value);
            } else {
                *attrs.get_mut(n)? = (key, value);
                n += 1;
            }
            if raw.get(pos) != Some(&b',') {
                return None;
            }
            pos += 1;
        }
    }

    /// A JSON string at `pos` without escapes or control characters; moves `pos` past its
    /// closing quote.
    fn string<'a>(doc: &'a str, pos: &mut usize) -> Option<&'a str> {
        let raw = doc.as_bytes();
        if raw.get(*pos) != Some(&b'"') {
            return None;
        }
        let start = *pos + 1;
        let len = memchr::memchr2(b'"', b'\\', raw.get(start..)?)?;
        let text = doc.get(start..start + len)?;
        if raw.get(start + len) != Some(&b'"') || text.bytes().any(|b| b < 0x20) {
            return None;
        }
        *pos = start + len + 1;
        Some(text)
    }

    /// The index after the closing bracket of the object or array that opens at `pos`. Only
    /// brackets and strings are followed; the payload's grammar is checked by its typed parse.
    fn container_end(doc: &[u8], start: usize) -> Option<usize> {
        if !matches!(doc.get(start)?, b'{' | b'[') {
            return None;
        }
        // The bytes that matter: a quote (a string is skipped whole) and the four brackets.
        const STOP: [bool; 256] = {
            let mut t = [false; 256];
            t[b'"' as usize] = true;
            t[b'{' as usize] = true;
            t[b'}' as usize] = true;
            t[b'[' as usize] = true;
            t[b']' as usize] = true;
            t
        };
        let mut depth = 0usize;
        let mut pos = start;
        while let Some(&b) = doc.get(pos) {
            if !STOP[usize::from(b)] {
                pos += 1;
                continue;
            }
            match b {
                b'"' => {
                    pos = string_end(doc, pos + 1)?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                _ => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(pos + 1);
                    }
                }
            }
            pos += 1;
        }
        None
    }

    /// The index after the closing quote of a string whose content starts at `pos`.
    fn string_end(doc: &[u8], mut pos: usize) -> Option<usize> {
        loop {
            let i = pos + memchr::memchr2(b'"', b'\\', doc.get(pos..)?)?;
            if doc.get(i)? == &b'\\' {
                pos = i + 2;
            } else {
                return Some(i + 1);
            }
        }
    }
}

/// The top-level object, read in one pass with every value kept as raw JSON.
struct RawEnvelope<'de> {
    spec: Option<String>,
    attrs: Vec<(Cow<'de, str>, &'de RawValue)>,
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = RawEnvelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = RawEnvelope {
            spec: None,
            attrs: Vec::with_capacity(12),
        };
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            if key == "specversion" {
                out.spec = Some(
                    serde_json::from_str::<String>(value.get())
                        .unwrap_or_else(|_| value.get().to_owned()),
                );
            } else {
                out.attrs.push((key, value));
            }
        }
        Ok(out)
    }
}

/// A map key that borrows from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Formats a time as RFC 3339 in UTC with microseconds: `2026-11-24T12:00:00.000000Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    let mut out = [0u8; 27];
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(day));
    put(11, 2, (rem / 3600) as u64);
    put(14, 2, (rem % 3600 / 60) as u64);
    put(17, 2, (rem % 60) as u64);
    put(20, 6, u64::from(d.subsec_micros()));
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        out[i] = c;
    }
    // Digits and separators only: always valid (and `from_utf8` is cheaper than a lossy scan).
    std::str::from_utf8(&out)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Encoded {
        let meta = Metadata {
            id: "id-1".into(),
            source: "svc".into(),
            event_type: "a.B".into(),
            time: Some("2026-11-24T00:00:00.000000Z".into()),
            data_version: Some(2),
            correlation_id: Some("c-1".into()),
            headers: [("tenant".to_string(), "ac\"me".to_string())].into(),
            ..Metadata::default()
        };
        Encoded::new(meta, &serde_json::json!({"x": 1})).unwrap()
    }

    #[test]
    fn json_round_trip_keeps_every_attribute() {
        let enc = sample();
        let json = enc.to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["dataversion"], 2);
        assert_eq!(v["data"]["x"], 1);
        let dec = decode("a.B", &WireBody::Json(json)).unwrap();
        assert_eq!(&dec.meta, enc.meta());
        assert_eq!(&dec.data[..], b"{\"x\":1}");
    }

    #[test]
    fn fields_round_trip_keeps_every_attribute() {
        let enc = sample();
        let owned = |f: Vec<(Cow<'static, str>, Bytes)>| {
            f.into_iter()
                .map(|(k, v)| (k.into_owned(), v))
                .collect::<Vec<_>>()
        };
        let one = owned(enc.to_fields());
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].0, EVENT_FIELD);
        assert_eq!(&one[0].1[..], &enc.to_json()[..]);
        for fields in [one, owned(enc.to_attribute_fields())] {
            let dec = decode("a.B", &WireBody::Fields(fields)).unwrap();
            assert_eq!(dec.meta.headers["tenant"], "ac\"me");
            assert_eq!(dec.meta.data_version, Some(2));
            assert_eq!(dec.meta.correlation_id.as_deref(), Some("c-1"));
            assert_eq!(&dec.data[..], b"{\"x\":1}");
        }
    }

    #[test]
    fn bare_json_is_data() {
        let dec = decode("c", &WireBody::Json(Bytes::from_static(b" {\"x\": 1}"))).unwrap();
        assert!(dec.meta.id.is_empty());
        let x: serde_json::Value = dec.payload("c").unwrap();
        assert_eq!(x["x"], 1);
        let dec = decode("c", &WireBody::Json(Bytes::from_static(b"[1,2]"))).unwrap();
        assert_eq!(&dec.data[..], b"[1,2]");
        let dec = decode(
            "s",
            &WireBody::Fields(vec![("data".into(), Bytes::from_static(b"{\"x\":2}"))]),
        )
        .unwrap();
        assert_eq!(&dec.data[..], b"{\"x\":2}");
    }

    #[test]
    fn garbage_is_a_decode_error_with_channel_and_excerpt() {
        for bad in [&b"\xff\xfe"[..], b"{\"a\":", b"not json", b""] {
            let e = decode("ch", &WireBody::Json(Bytes::copy_from_slice(bad))).unwrap_err();
            assert_eq!(e.channel, "ch");
        }
        let e = decode(
            "ch",
            &WireBody::Json(Bytes::from_static(
                b"{\"specversion\":\"0.3\",\"id\":\"1\",\"type\":\"t\",\"data\":{}}",
            )),
        )
        .unwrap_err();
        assert!(e.reason.contains("specversion"), "{e}");
        let e = decode(
            "s",
            &WireBody::Fields(vec![("order".into(), Bytes::from_static(b"1"))]),
        )
        .unwrap_err();
        assert!(
            e.reason.contains("neither an `event` nor a `data` field"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_data_fields_decode_without_panic() {
        let fields = vec![
            ("specversion".to_string(), Bytes::from_static(b"1.0")),
            ("id".to_string(), Bytes::from_static(b"x")),
            ("type".to_string(), Bytes::from_static(b"t")),
            ("data".to_string(), Bytes::from_static(b"{\"a\":1}")),
            ("data".to_string(), Bytes::from_static(b"{\"a\":2}")),
        ];
        let dec = decode("s", &WireBody::Fields(fields.clone())).unwrap();
        assert_eq!(&dec.data[..], b"{\"a\":2}");
        let bare = fields[3..].to_vec();
        let dec = decode("s", &WireBody::Fields(bare)).unwrap();
        assert_eq!(&dec.data[..], b"{\"a\":2}");
    }

    /// What the Python SDK (`cloudevents` 2.2.0) writes for bytes data, verbatim: with its
    /// `JSONFormat().write(event)`, then with the v1 layer's `to_json(event)`.
    const PYTHON_SDK_BYTES: [&[u8]; 2] = [
        br#"{"type": "shop.orders.OrderCreated", "source": "/py", "id": "py-1", "specversion": "1.0", "time": "2026-12-01T14:22:27.784743Z", "data_base64": "eyJvcmRlcl9pZCI6Im8tMSIsImFtb3VudF9jZW50cyI6MTAwfQ=="}"#,
        br#"{"specversion": "1.0", "id": "py-3", "source": "/py", "type": "shop.orders.OrderCreated", "time": "2026-12-01T14:22:27.797040+00:00", "data_base64": "eyJvcmRlcl9pZCI6Im8tMSIsImFtb3VudF9jZW50cyI6MTAwfQ=="}"#,
    ];
    const PYTHON_PAYLOAD: &[u8] = br#"{"order_id":"o-1","amount_cents":100}"#;

    #[test]
    fn data_base64_carries_the_payload_json() {
        for doc in PYTHON_SDK_BYTES {
            let doc = Bytes::from_static(doc);
            assert!(
                compact::decode("c", &doc).is_none(),
                "the general way decodes it"
            );
            let dec = decode("c", &WireBody::Json(doc)).unwrap();
            assert_eq!(dec.meta.event_type, "shop.orders.OrderCreated");
            assert_eq!(&dec.data[..], PYTHON_PAYLOAD);
        }
        // Any JSON content type; padding may be left out.
        for (ct, b64) in [
            ("application/json", "eyJ4IjoxfQ=="),
            ("application/vnd.shop+json; charset=utf-8", "eyJ4IjoxfQ"),
        ] {
            let doc = format!(
                r#"{{"specversion":"1.0","id":"1","type":"t","datacontenttype":"{ct}","data_base64":"{b64}"}}"#
            );
            let dec = decode("c", &WireBody::Json(Bytes::from(doc))).unwrap();
            assert_eq!(&dec.data[..], b"{\"x\":1}", "{ct}");
        }
        // Attributes as stream fields may carry it too.
        let fields = vec![
            ("specversion".to_string(), Bytes::from_static(b"1.0")),
            ("id".to_string(), Bytes::from_static(b"py-1")),
            ("type".to_string(), Bytes::from_static(b"t")),
            (
                "data_base64".to_string(),
                Bytes::from_static(b"eyJ4IjoxfQ=="),
            ),
        ];
        let dec = decode("s", &WireBody::Fields(fields)).unwrap();
        assert_eq!(&dec.data[..], b"{\"x\":1}");
    }

    #[test]
    fn data_base64_that_cannot_be_the_payload_is_refused_with_the_reason() {
        let refused = |doc: &str| {
            decode("c", &WireBody::Json(Bytes::from(doc.to_owned())))
                .unwrap_err()
                .reason
        };
        let both = refused(
            r#"{"specversion":"1.0","id":"1","type":"t","data_base64":"eyJ4IjoxfQ==","data":{"x":1}}"#,
        );
        assert_eq!(
            both,
            "the envelope has both `data` and `data_base64`; CloudEvents allows only one of them"
        );
        let bad =
            refused(r#"{"specversion":"1.0","id":"1","type":"t","data_base64":"eyJ4I!oxfQ=="}"#);
        assert!(
            bad.starts_with("`data_base64` is not valid base64: "),
            "{bad}"
        );
        let number = refused(r#"{"specversion":"1.0","id":"1","type":"t","data_base64":12}"#);
        assert_eq!(number, "`data_base64` is not a string");
        let png = refused(
            r#"{"specversion":"1.0","id":"1","type":"t","datacontenttype":"image/png","data_base64":"iVBORw0KGgo="}"#,
        );
        assert_eq!(png, "datacontenttype \"image/png\" is not JSON");
        let fields = vec![
            ("specversion".to_string(), Bytes::from_static(b"1.0")),
            ("id".to_string(), Bytes::from_static(b"1")),
            ("type".to_string(), Bytes::from_static(b"t")),
            ("data".to_string(), Bytes::from_static(b"{\"x\":1}")),
            (
                "data_base64".to_string(),
                Bytes::from_static(b"eyJ4IjoxfQ=="),
            ),
        ];
        let e = decode("s", &WireBody::Fields(fields)).unwrap_err();
        assert!(e.reason.contains("both `data` and `data_base64`"), "{e}");
        assert!(e.excerpt.contains("data_base64=eyJ4"), "{e}");
    }

    #[test]
    fn strings_are_escaped_exactly_when_json_needs_it() {
        for text in [
            "",
            "plain",
            "0123456789abcdef0123",
            "quote\" in the middle of a long string",
            "back\\slash",
            "tab\tand newline\n",
            "\u{1f}",
            "ünïcödé stays as it is",
            "DEL \u{7f} needs no escape",
            "0123456\"",
        ] {
            let mut out = Vec::new();
            write_json_str(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    /// Documents as eventbus writes them, and the same documents mutated as a peer or a faulty
    /// network might: the fast path either declines or agrees with the general decoder, and
    /// where only the fast path accepts, the payload is invalid JSON its typed parse refuses.
    #[test]
    fn compact_fast_path_agrees_with_the_general_decoder() {
        use proptest::prelude::*;
        let meta = (
            prop_oneof!["[a-z0-9-]{1,12}", "[ -~]{0,12}"],
            prop_oneof!["[a-z][a-z.]{0,11}", "[a-z.\\\\\"é]{0,12}"],
            proptest::option::of(0u32..5),
            proptest::collection::btree_map("[a-z]{1,6}", "[ -~]{0,8}", 0..3),
        );
        let payload = prop_oneof![
            Just(serde_json::json!({"a": 1})),
            Just(serde_json::json!([1, "}", {"b": "]\\\""}])),
            Just(serde_json::json!({"deep": [[[{"x": null}]]], "s": "a\\u0001b"})),
            Just(serde_json::json!("scalar")),
            Just(serde_json::json!(null)),
        ];
        let mutation = prop_oneof![Just(None), (0usize..400, any::<u8>()).prop_map(Some),];
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(3000));
        let (fast_ok, fast_err) = (
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        );
        runner
            .run(
                &(meta, payload, mutation),
                |((id, ty, version, headers), payload, m)| {
                    let meta = Metadata {
                        id,
                        source: "svc".into(),
                        event_type: ty.into(),
                        time: Some("2026-11-24T00:00:00.000000Z".into()),
                        data_version: version,
                        headers,
                        ..Metadata::default()
                    };
                    let mut doc = Encoded::new(meta, &payload).unwrap().to_json().to_vec();
                    if let Some((at, byte)) = m {
                        let at = at % (doc.len() + 1);
                        doc.insert(at, byte);
                    }
                    let doc = Bytes::from(doc);
                    let Some(fast) = compact::decode("c", &doc) else {
                        return Ok(());
                    };
                    let counter = if fast.is_ok() { &fast_ok } else { &fast_err };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match (fast, decode_general("c", &doc)) {
                        (Ok(f), Ok(g)) => {
                            prop_assert_eq!(f.meta, g.meta);
                            prop_assert_eq!(f.data, g.data);
                        }
                        (Err(f), Err(_)) => prop_assert!(!f.reason.is_empty()),
                        (Ok(f), Err(_)) => prop_assert!(
                            serde_json::from_slice::<de::IgnoredAny>(&f.data).is_err(),
                            "only the fast path accepted {:?}",
                            String::from_utf8_lossy(&doc)
                        ),
                        (Err(f), Ok(_)) => prop_assert!(
                            false,
                            "only the general decoder accepted {:?}: {}",
                            String::from_utf8_lossy(&doc),
                            f
                        ),
                    }
                    Ok(())
                },
            )
            .unwrap();
        // The property is not vacuous: the fast path took many of the cases, both ways.
        let (fast_ok, fast_err) = (fast_ok.into_inner(), fast_err.into_inner());
        assert!(fast_ok > 300 && fast_err > 10, "{fast_ok} / {fast_err}");
    }

    #[test]
    fn what_eventbus_writes_takes_the_fast_path() {
        let mut plain = sample().meta().clone();
        plain.headers.insert("tenant".into(), "acme".into());
        let enc = Encoded::new(plain, &serde_json::json!({"x": [1, "}"]})).unwrap();
        let fast =
            compact::decode("a.B", &enc.to_json()).expect("the fast path reads its own layout");
        let fast = fast.unwrap();
        assert_eq!(fast.meta.headers["tenant"], "acme");
        assert_eq!(fast.meta.data_version, Some(2));
        assert_eq!(&fast.data[..], b"{\"x\":[1,\"}\"]}");
        // An escaped attribute value is the general decoder's job.
        assert!(compact::decode("a.B", &sample().to_json()).is_none());
        let spaced = Bytes::from_static(
            b"{ \"specversion\":\"1.0\",\"id\":\"1\",\"type\":\"t\",\"data\":{}}",
        );
        assert!(
            compact::decode("c", &spaced).is_none(),
            "whitespace goes the general way"
        );
        // A number with a leading zero is not JSON: declined, and refused by the general way.
        let zero = Bytes::from_static(
            b"{\"specversion\":\"1.0\",\"id\":\"1\",\"type\":\"t\",\"dataversion\":01,\"data\":{}}",
        );
        assert!(compact::decode("c", &zero).is_none());
        assert!(decode("c", &WireBody::Json(zero)).is_err());
    }

    #[test]
    fn rfc3339_formats_utc() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}
