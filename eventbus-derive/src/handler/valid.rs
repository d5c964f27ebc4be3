//! Every check on a `#[handler]`: the options' values and what can be seen of the signature.
//!
//! Whether the first argument is an event, the others are `Context` or `State<T>`, the return
//! type fits the event's reply and `dedup`/`broadcast` fit the event's durability can only be
//! known by the compiler: `expand.rs` emits those checks as code spanned at the user's tokens,
//! so the compiler's errors point there.

use syn::{FnArg, Ident, ItemFn, ReturnType, Safety, Signature, Type};

use super::attr::Options;
use crate::ctxt::Ctxt;
use crate::meta;
use crate::name;

/// A handler that passed every check.
pub(crate) struct Spec<'a> {
    pub(crate) ident: &'a Ident,
    /// The type of the first argument.
    pub(crate) event: &'a Type,
    /// The types of the further arguments: extractors (`Context`, `State<T>`).
    pub(crate) extractors: Vec<&'a Type>,
    /// The return type when it has to be checked by the compiler (not for `()`).
    pub(crate) output: Option<&'a Type>,
    pub(crate) options: Settings,
}

/// Validated options; `None` keeps the runtime default.
#[derive(Default)]
pub(crate) struct Settings {
    pub(crate) group: Option<String>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) backoff_ms: Option<u64>,
    pub(crate) backoff_max_ms: Option<u64>,
    /// `broadcast`: its key (errors about the event point there).
    pub(crate) broadcast: Option<Ident>,
    /// `dedup`: its key (errors about the event point there) and the ttl in seconds.
    pub(crate) dedup: Option<(Ident, u64)>,
}

/// How long `dedup` remembers a handled event without `dedup_ttl_secs`: 24 h, as
/// `HandlerOptions::DEFAULT_DEDUP_TTL`.
const DEFAULT_DEDUP_TTL_SECS: u64 = 86_400;

const SHAPE: &str = "`async fn name(ev: MyEvent)`, followed by any of `ctx: Context` and \
                     `state: State<T>`";

/// Checks everything; `None` when the signature cannot be used at all (errors are in `cx`).
pub(crate) fn validate<'a>(cx: &Ctxt, item: &'a ItemFn, options: &Options) -> Option<Spec<'a>> {
    let settings = settings(cx, options);
    let sig = &item.sig;
    qualifiers(cx, sig);
    let output = output(cx, &sig.output);
    let (event, extractors) = arguments(cx, sig)?;
    Some(Spec {
        ident: &sig.ident,
        event,
        extractors,
        output,
        options: settings,
    })
}

fn settings(cx: &Ctxt, o: &Options) -> Settings {
    if let (Some(group), Some(_)) = (&o.group, &o.broadcast) {
        cx.error_spanned_by(
            &group.key,
            "a `broadcast` handler reads the stream on its own, without a consumer group; \
             drop `group` or `broadcast`",
        );
    }
    if let (Some(dedup), Some(_)) = (&o.dedup, &o.broadcast) {
        cx.error_spanned_by(
            &dedup.key,
            "`dedup` remembers what a consumer group handled, and a `broadcast` handler has no \
             group; drop `dedup` or `broadcast`",
        );
    }
    if let (None, Some(ttl)) = (&o.dedup, &o.dedup_ttl_secs) {
        cx.error_spanned_by(
            &ttl.key,
            "`dedup_ttl_secs` is how long `dedup` remembers a handled event, and `dedup` is not \
             set: write `#[handler(dedup, dedup_ttl_secs = 3600)]`",
        );
    }
    let dedup_ttl = o
        .dedup_ttl_secs
        .as_ref()
        .and_then(|s| meta::number::<u64>(cx, &s.key, &s.value, 1));
    let s = Settings {
        group: o
            .group
            .as_ref()
            .and_then(|g| name::check(cx, "group", &g.value).then(|| g.value.value())),
        concurrency: o
            .concurrency
            .as_ref()
            .and_then(|s| meta::number::<usize>(cx, &s.key, &s.value, 1)),
        max_deliveries: o
            .max_deliveries
            .as_ref()
            .and_then(|s| meta::number::<u32>(cx, &s.key, &s.value, 1)),
        backoff_ms: o
            .backoff_ms
            .as_ref()
            .and_then(|s| meta::number::<u64>(cx, &s.key, &s.value, 0)),
        backoff_max_ms: o
            .backoff_max_ms
            .as_ref()
            .and_then(|s| meta::number::<u64>(cx, &s.key, &s.value, 0)),
        broadcast: o.broadcast.as_ref().map(|b| b.key.clone()),
        dedup: o
            .dedup
            .as_ref()
            .map(|d| (d.key.clone(), dedup_ttl.unwrap_or(DEFAULT_DEDUP_TTL_SECS))),
    };
    if let (Some(initial), Some(max), Some(at)) =
        (s.backoff_ms, s.backoff_max_ms, &o.backoff_max_ms)
        && max < initial
    {
        cx.error_spanned_by(
            &at.value,
            format!("`backoff_max_ms` ({max}) is below `backoff_ms` ({initial}): the bound must be at least the first delay"),
        );
    }
    s
}

/// `async`, and none of `const`, `unsafe`, `extern`, generics.
fn qualifiers(cx: &Ctxt, sig: &Signature) {
    let name = &sig.ident;
    if sig.asyncness.is_none() {
        cx.error_spanned_by(
            sig.fn_token,
            format!("handlers must be `async fn`: write `async fn {name}(...)`"),
        );
    }
    if let Some(c) = &sig.constness {
        cx.error_spanned_by(c, "a handler cannot be `const`");
    }
    if let Safety::Unsafe(u) = &sig.safety {
        cx.error_spanned_by(
            u,
            "a handler cannot be `unsafe`: the bus calls it from safe code",
        );
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(
            abi,
            "a handler cannot declare an ABI: it is called from Rust",
        );
    }
    if let Some(generics) = crate::ctxt::generics_span(&sig.generics) {
        cx.error_spanned_by(
            generics,
            "a handler cannot be generic: it is registered for one concrete event type; write one \
             handler per event type",
        );
    }
    if let Some(v) = &sig.variadic {
        cx.error_spanned_by(v, format!("a handler takes {SHAPE}"));
    }
}

/// The event argument and the extractors after it.
fn arguments<'a>(cx: &Ctxt, sig: &'a Signature) -> Option<(&'a Type, Vec<&'a Type>)> {
    let mut types = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        match arg {
            FnArg::Receiver(r) => cx.error_spanned_by(
                r,
                "a handler is a free function, not a method, so it cannot take `self`; for \
                 shared state, give it to the bus with `Bus::builder().state(value)` and take \
                 it as an argument `state: State<T>`",
            ),
            FnArg::Typed(t) => {
                by_value(cx, &t.ty, i);
                types.push(&*t.ty);
            }
        }
    }
    if sig.inputs.is_empty() {
        cx.error_at(
            sig.paren_token.span.join(),
            format!("a handler takes the event it handles as its first argument: {SHAPE}"),
        );
    }
    let (event, extractors) = types.split_first()?;
    Some((event, extractors.to_vec()))
}

/// The event and the extractors are taken by value: the handler's future must be `'static`.
fn by_value(cx: &Ctxt, ty: &Type, index: usize) {
    let what = if index == 0 {
        "the event (`ev: MyEvent`)"
    } else {
        "`Context` and `State<T>` (they are cheap to clone)"
    };
    let problem = match ty {
        Type::Reference(_) => "a reference",
        Type::ImplTrait(_) => "`impl Trait`",
        Type::Infer(_) => "`_`",
        _ => return,
    };
    cx.error_spanned_by(
        ty,
        format!("a handler takes {what} by value, not {problem}"),
    );
}

/// `None` for `()` (written or not); the type when the compiler has to check it; an error for
/// types that can never be a handler's return type.
fn output<'a>(cx: &Ctxt, output: &'a ReturnType) -> Option<&'a Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let mut inner: &Type = ty;
    loop {
        match inner {
            Type::Paren(p) => inner = &p.elem,
            Type::Group(g) => inner = &g.elem,
            _ => break,
        }
    }
    let problem = match inner {
        Type::Tuple(t) if t.elems.is_empty() => return None,
        Type::Path(_) | Type::Macro(_) => return Some(ty),
        Type::ImplTrait(_) => "`impl Trait` is not allowed here; name the type",
        Type::Reference(_) => "a reference cannot outlive the handler call",
        Type::Tuple(_) => "a tuple is not a handler result",
        _ => "this is not a handler result",
    };
    cx.error_spanned_by(
        ty,
        format!(
            "{problem}: a handler returns `()` or `Result<(), E>` with `E: Into<HandlerError>` \
             (`Result<Reply, E>` for a request event)"
        ),
    );
    None
}
