//! The `#[derive(Event)]` and `#[handler]` macros of eventbus.
//!
//! Use them through `eventbus_core` (or the `eventbus` facade), which re-exports both and documents
//! them with examples; the generated code refers to `::eventbus_core`, or to `::eventbus` in a crate that depends on the facade only (see `root.rs`).
//!
//! # How this crate reads
//!
//! Both macros go the same way, in the style of thiserror's `impl` crate: **parse** the input into
//! plain data, **validate** it (every check, with an error pointing at the offending token), then
//! **expand** it into code. Nothing is generated before everything is validated, and validation
//! collects *all* errors before reporting them (serde's `Ctxt` pattern, see `ctxt.rs`), so a user
//! with three mistakes sees three errors at once.
//!
//! | file | job |
//! |---|---|
//! | `event/ast.rs` | the `#[derive(Event)]` input as plain data |
//! | `event/attr.rs` | parsing `#[event(...)]` attributes (syntax only) |
//! | `event/valid.rs` | every check on an event, producing the spec to expand |
//! | `event/expand.rs` | the `impl Event` and its registration |
//! | `handler/attr.rs` | parsing `#[handler(...)]` options |
//! | `handler/valid.rs` | every check on a handler's signature and options that tokens can tell |
//! | `handler/expand.rs` | the handler's registration, and the checks only the compiler can make, written so that its errors point at the user's token |
//! | `name.rs` | the channel-name rules and `{field}` templates, shared by both macros |
//! | `meta.rs` | reading one `key = value` of an attribute, shared by both macros |
//!
//! After an error the event derive still emits a stub `impl Event` (like thiserror does), so the
//! user sees the real error and not a cascade of "`X` is not an event" errors elsewhere.
//!
//! What only the compiler can check (is the first argument an event, is an argument an
//! extractor, does the return type fit the event's reply, is the event durable for `dedup`) is
//! emitted as code whose failing trait bound carries a `#[diagnostic::on_unimplemented]` message
//! of `eventbus_core`, spanned at the user's token; no generated name appears in those errors.
//!
//! Attribute names follow the field they set (`max_len` sets `EventDescriptor::max_len`,
//! `backoff_ms` sets `HandlerOptions::backoff`); an integer that is a duration carries its unit
//! as a suffix (`_ms`, `_secs`). A renamed attribute stays known, as an error that gives the
//! new name.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use proc_macro::TokenStream;

mod ctxt;
mod event;
mod handler;
mod meta;
mod name;
mod root;

/// Implements `eventbus_core::Event` for a struct or enum. Documented on the re-export,
/// `eventbus_core::Event`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::derive(&input).into()
}

/// Registers an async fn as an event handler. Documented on the re-export,
/// `eventbus_core::handler`.
///
/// Options: `group = "..."`, `concurrency = N`, `max_deliveries = N`, `backoff_ms = N`,
/// `backoff_max_ms = N`, `broadcast` (durable events only), `dedup` (skip event ids the
/// handler's group handled already; durable events only) and `dedup_ttl_secs = N` (how long
/// `dedup` remembers an id, default 86400). `broadcast` and `dedup` on an ephemeral event fail
/// to compile at the option.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}
