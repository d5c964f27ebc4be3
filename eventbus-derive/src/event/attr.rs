//! Parsing `#[event(...)]`: which keys were given, with which literals. Syntax only (unknown and
//! duplicate keys, wrong kinds of literal); what the values mean is checked in `valid.rs`.
//!
//! The keys may be spread over several `#[event(...)]` attributes.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, LitInt, LitStr, Type};

use super::ast::Durability;
use crate::ctxt::Ctxt;
use crate::meta::{self, Setting};

const KEYS: &[&str] = &[
    "durable",
    "ephemeral",
    "name",
    "module",
    "channel",
    "max_len",
    "version",
    "reply",
];

/// Everything given in `#[event(...)]`; `None` for what was not given (or was given wrong).
#[derive(Default)]
pub(crate) struct Attrs {
    pub(crate) durability: Option<Setting<Durability>>,
    pub(crate) name: Option<Setting<LitStr>>,
    pub(crate) module: Option<Setting<LitStr>>,
    pub(crate) channel: Option<Setting<LitStr>>,
    pub(crate) max_len: Option<Setting<LitInt>>,
    pub(crate) version: Option<Setting<LitInt>>,
    pub(crate) reply: Option<Setting<Type>>,
}

pub(crate) fn parse(cx: &Ctxt, attrs: &[Attribute]) -> Attrs {
    let mut out = Attrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        if let Err(err) = attr.parse_nested_meta(|meta| entry(cx, &mut out, &meta)) {
            cx.syn_error(err);
        }
    }
    out
}

/// One `key` or `key = value`.
fn entry(cx: &Ctxt, out: &mut Attrs, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident() else {
        meta::unknown(cx, meta, "event", KEYS);
        return Ok(());
    };
    match key.to_string().as_str() {
        flag @ ("durable" | "ephemeral") => {
            if meta::flag(cx, meta, key, "event") {
                let value = if flag == "durable" {
                    Durability::Durable
                } else {
                    Durability::Ephemeral
                };
                durability(cx, &mut out.durability, key, value);
            }
        }
        "name" => {
            if let Some(v) = meta::string(cx, meta, key, "shop.orders.OrderCreated")? {
                meta::set(cx, &mut out.name, key, v);
            }
        }
        "module" => {
            if let Some(v) = meta::string(cx, meta, key, "shop.orders")? {
                meta::set(cx, &mut out.module, key, v);
            }
        }
        // The bus has a `namespace` (a prefix of every key): one name, one meaning.
        "namespace" => meta::renamed(cx, meta, key, "module"),
        "channel" => {
            if let Some(v) = meta::string(cx, meta, key, "tenant.{tenant}.presence")? {
                meta::set(cx, &mut out.channel, key, v);
            }
        }
        "max_len" => {
            if let Some(v) = meta::integer(cx, meta, key, "100000")? {
                meta::set(cx, &mut out.max_len, key, v);
            }
        }
        "maxlen" => meta::renamed(cx, meta, key, "max_len"),
        "version" => {
            if let Some(v) = meta::integer(cx, meta, key, "2")? {
                meta::set(cx, &mut out.version, key, v);
            }
        }
        "reply" => {
            if let Some(v) = meta::ty(cx, meta, key)? {
                meta::set(cx, &mut out.reply, key, v);
            }
        }
        _ => meta::unknown(cx, meta, "event", KEYS),
    }
    Ok(())
}

/// `durable` and `ephemeral` share one slot: the second of them is either a repeat or a
/// contradiction.
fn durability(
    cx: &Ctxt,
    slot: &mut Option<Setting<Durability>>,
    key: &syn::Ident,
    value: Durability,
) {
    match slot {
        Some(first) if first.value != value => cx.error_spanned_by(
            key,
            format!(
                "an event is either `durable` or `ephemeral`, not both: `{key}` contradicts `{}` above",
                first.key
            ),
        ),
        _ => meta::set(cx, slot, key, value),
    }
}
