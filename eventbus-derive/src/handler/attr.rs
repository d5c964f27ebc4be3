//! Parsing `#[handler(...)]` options: which keys were given, with which literals. Syntax only;
//! ranges and combinations are checked in `valid.rs`.

use proc_macro2::TokenStream;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{LitInt, LitStr};

use crate::ctxt::Ctxt;
use crate::meta::{self, Setting};

const KEYS: &[&str] = &[
    "group",
    "concurrency",
    "max_deliveries",
    "backoff_ms",
    "backoff_max_ms",
    "broadcast",
    "dedup",
    "dedup_ttl_secs",
];

/// Everything given in `#[handler(...)]`.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) group: Option<Setting<LitStr>>,
    pub(crate) concurrency: Option<Setting<LitInt>>,
    pub(crate) max_deliveries: Option<Setting<LitInt>>,
    pub(crate) backoff_ms: Option<Setting<LitInt>>,
    pub(crate) backoff_max_ms: Option<Setting<LitInt>>,
    pub(crate) broadcast: Option<Setting<()>>,
    pub(crate) dedup: Option<Setting<()>>,
    pub(crate) dedup_ttl_secs: Option<Setting<LitInt>>,
}

pub(crate) fn parse(cx: &Ctxt, args: TokenStream) -> Options {
    let mut out = Options::default();
    let parser = syn::meta::parser(|meta| entry(cx, &mut out, &meta));
    if let Err(err) = parser.parse2(args) {
        cx.syn_error(err);
    }
    out
}

/// One `key` or `key = value`.
fn entry(cx: &Ctxt, out: &mut Options, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    let Some(key) = meta.path.get_ident() else {
        meta::unknown(cx, meta, "handler", KEYS);
        return Ok(());
    };
    let int = |slot: &mut Option<Setting<LitInt>>, example| -> syn::Result<()> {
        if let Some(v) = meta::integer(cx, meta, key, example)? {
            meta::set(cx, slot, key, v);
        }
        Ok(())
    };
    match key.to_string().as_str() {
        "group" => {
            if let Some(v) = meta::string(cx, meta, key, "billing")? {
                meta::set(cx, &mut out.group, key, v);
            }
        }
        "concurrency" => int(&mut out.concurrency, "8")?,
        "max_deliveries" => int(&mut out.max_deliveries, "5")?,
        "backoff_ms" => int(&mut out.backoff_ms, "100")?,
        "backoff_max_ms" => int(&mut out.backoff_max_ms, "10000")?,
        "broadcast" => {
            if meta::flag(cx, meta, key, "handler") {
                meta::set(cx, &mut out.broadcast, key, ());
            }
        }
        "dedup" => {
            // Taken as set even with a value (reported by `flag`), so that a `dedup_ttl_secs`
            // next to it is not also reported as lacking its `dedup`.
            meta::flag(cx, meta, key, "handler");
            meta::set(cx, &mut out.dedup, key, ());
        }
        "dedup_ttl_secs" => int(&mut out.dedup_ttl_secs, "86400")?,
        _ => meta::unknown(cx, meta, "handler", KEYS),
    }
    Ok(())
}
