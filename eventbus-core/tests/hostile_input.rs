//! Property tests of the envelope decoder: whatever bytes a peer sends, decoding returns a value
//! or a `DecodeError`, never a panic, and what eventbus encodes always decodes back.
#![allow(missing_docs)]

use bytes::Bytes;
use eventbus_core::envelope::{Encoded, Metadata, WireBody, decode};
use proptest::prelude::*;

/// Field names a peer might send: the known attributes (duplicates included) and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("specversion".to_string()),
        Just("id".to_string()),
        Just("type".to_string()),
        Just("source".to_string()),
        Just("time".to_string()),
        Just("datacontenttype".to_string()),
        Just("dataversion".to_string()),
        Just("data".to_string()),
        Just("data_base64".to_string()),
        "[a-z]{1,8}",
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"1.0".to_vec()),
        Just(b"{\"n\":1}".to_vec()),
        Just(b"application/json".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// JSON-ish documents: envelopes with random attribute values, nested data, broken endings.
fn json_doc() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("\"1.0\"".to_string()),
        Just("null".to_string()),
        Just("12".to_string()),
        Just("{\"a\":[1,{\"b\":\"}\"}]}".to_string()),
        "\"[^\"\\\\]{0,12}\"",
        "[\\[\\]{}\",:0-9a-z\\\\]{0,16}",
    ];
    let member = (field_name(), value).prop_map(|(k, v)| format!("\"{k}\":{v}"));
    (proptest::collection::vec(member, 0..10), any::<bool>()).prop_map(|(members, cut)| {
        let doc = format!("{{{}}}", members.join(","));
        let mut bytes = doc.into_bytes();
        if cut && !bytes.is_empty() {
            bytes.truncate(bytes.len() / 2);
        }
        bytes
    })
}

/// 2000 cases per property, or `PROPTEST_CASES` from the environment (`scripts/fuzz` runs many
/// more). Read here because an explicit `with_cases` would override proptest's own reading.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2000);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode("hostile", &WireBody::Json(Bytes::from(bytes)));
    }

    #[test]
    fn json_like_documents_never_panic(doc in json_doc()) {
        if let Ok(decoded) = decode("hostile", &WireBody::Json(Bytes::from(doc))) {
            let _ = decoded.payload::<serde_json::Value>("hostile");
        }
    }

    #[test]
    fn random_stream_fields_never_panic(
        fields in proptest::collection::vec((field_name(), field_value()), 0..12)
    ) {
        let fields = fields.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
        if let Ok(decoded) = decode("hostile", &WireBody::Fields(fields)) {
            let _ = decoded.payload::<serde_json::Value>("hostile");
        }
    }

    #[test]
    fn what_is_encoded_decodes_back(
        id in "[ -~]{1,40}",
        source in "[ -~]{0,20}",
        ty in "[a-zA-Z.]{1,30}",
        header in "[ -~]{0,20}",
        n in any::<i64>(),
        text in ".{0,40}",
    ) {
        let meta = Metadata::new(id, source, ty).with_header("tenant", header);
        let payload = serde_json::json!({ "n": n, "text": text });
        let enc = Encoded::new(meta.clone(), &payload).unwrap();
        let json = decode("c", &WireBody::Json(enc.to_json())).unwrap();
        prop_assert_eq!(json.meta.id(), meta.id());
        prop_assert!(json.meta.headers().eq(meta.headers()));
        prop_assert_eq!(json.payload::<serde_json::Value>("c").unwrap(), payload.clone());
        let fields = enc.to_fields().into_iter().map(|(k, v)| (k.into_owned(), v)).collect();
        let from_fields = decode("c", &WireBody::Fields(fields)).unwrap();
        prop_assert_eq!(&from_fields.meta.source(), &meta.source());
        prop_assert_eq!(from_fields.payload::<serde_json::Value>("c").unwrap(), payload);
    }

    /// An envelope as CloudEvents SDKs write bytes data: the payload JSON base64-encoded in
    /// `data_base64`, padded or not, with a JSON content type or none. It decodes to exactly
    /// the payload JSON; with `data` beside it, it is refused.
    #[test]
    fn data_base64_decodes_to_the_payload_json(
        id in "[ -~]{1,20}",
        payload in payload(),
        content_type in prop_oneof![
            Just(None),
            Just(Some("application/json")),
            Just(Some("application/cloudevents+json")),
        ],
        padded in any::<bool>(),
        with_data in any::<bool>(),
    ) {
        use base64::Engine as _;
        let json = serde_json::to_vec(&payload).unwrap();
        let engine = if padded {
            base64::engine::general_purpose::STANDARD
        } else {
            base64::engine::general_purpose::STANDARD_NO_PAD
        };
        let mut doc = serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": "/py",
            "type": "a.B",
            "data_base64": engine.encode(&json),
        });
        if let Some(ct) = content_type {
            doc["datacontenttype"] = ct.into();
        }
        if with_data {
            doc["data"] = payload.clone();
        }
        let decoded = decode("c", &WireBody::Json(Bytes::from(serde_json::to_vec(&doc).unwrap())));
        if with_data {
            prop_assert!(decoded.unwrap_err().reason.contains("both `data` and `data_base64`"));
        } else {
            let decoded = decoded.unwrap();
            prop_assert_eq!(&decoded.meta.id(), &id);
            prop_assert_eq!(&decoded.data[..], &json[..]);
            prop_assert_eq!(decoded.payload::<serde_json::Value>("c").unwrap(), payload);
        }
    }

    /// An envelope as eventbus writes it, with one byte changed or inserted anywhere, judged
    /// against serde_json as the oracle: whatever the decoder accepts (by its fast path for the
    /// compact layout or its general path) means what serde_json reads in it, and a document
    /// only the decoder accepts carries a payload no typed parse takes.
    #[test]
    fn mutated_envelopes_decode_as_serde_json_reads_them(
        id in prop_oneof!["[a-z0-9-]{1,12}", "[ -~]{0,12}"],
        payload in payload(),
        at in any::<usize>(),
        byte in any::<u8>(),
        insert in any::<bool>(),
    ) {
        let meta = Metadata::new(id, "svc", "a.B")
            .with_time("2026-11-24T00:00:00.000000Z")
            .with_data_version(1);
        let mut doc = Encoded::new(meta, &payload).unwrap().to_json().to_vec();
        let at = at % doc.len();
        if insert {
            doc.insert(at, byte);
        } else {
            doc[at] = byte;
        }
        let oracle = serde_json::from_slice::<serde_json::Value>(&doc);
        let Ok(decoded) = decode("c", &WireBody::Json(Bytes::from(doc.clone()))) else {
            return Ok(());
        };
        let data = serde_json::from_slice::<serde_json::Value>(&decoded.data);
        match oracle {
            Ok(v) if v.get("specversion").is_some() => {
                let data = data.ok();
                prop_assert_eq!(data.as_ref(), Some(&v["data"]), "{}", String::from_utf8_lossy(&doc));
                if let Some(id) = v["id"].as_str() {
                    prop_assert_eq!(decoded.meta.id(), id);
                }
            }
            // No envelope: the whole document is the payload.
            Ok(v) => prop_assert_eq!(data.ok(), Some(v)),
            Err(_) => prop_assert!(data.is_err(), "only the decoder accepted {}", String::from_utf8_lossy(&doc)),
        }
    }
}

/// Payloads with nesting, strings holding brackets and quotes, and scalars.
fn payload() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!({"a": 1})),
        Just(serde_json::json!([1, "}", {"b": "]\\\""}])),
        Just(serde_json::json!({"deep": [[[{"x": null}]]], "s": "a\u{1}b", "e": "ünï"})),
        Just(serde_json::json!("scalar")),
        Just(serde_json::json!(null)),
        "[ -~]{0,16}".prop_map(|t| serde_json::json!({"t": t, "n": [t.len()]})),
    ]
}
