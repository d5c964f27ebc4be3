//! Code generation for `#[handler]`: the registration submitted to `inventory`, and the checks
//! only the compiler can make, each spanned at the type it is about.
//!
//! Passed straight to `erase`, a wrong type in the signature would be reported three or four
//! times (by `erase`'s bounds, the `Handler` impls, the registration). So each user-written type
//! goes through one local trait, and each mistake is reported once, at that type:
//!
//! * **event**: `<<E as Event>::Reply as __EventbusGate<E>>::Open` is `E` when `E: Event`. When it
//!   is not, the compiler reports "`E` is not an event" and cannot decide the type, and it does
//!   not report undecided types after an error. The registration's `<E as Event>::DESCRIPTOR` is
//!   spanned at the same type and gives the identical diagnostic, which the compiler prints once.
//! * **context**: `__EventbusContext`, implemented for `Context` only, with its own message.
//! * **return type**: `__EventbusReturn<E>` turns `()` and `Result<E::Reply, Er>` into
//!   `Result<E::Reply, HandlerError>` (what `eventbus_core::handler::HandlerReturn` does, done
//!   before `erase` instead of inside it), so `erase` always sees a valid handler.
//! * **`dedup`**: needs a durable event, which only the compiler knows (`DESCRIPTOR` is a
//!   `const`): a constant spanned at the `dedup` key panics when the event is ephemeral.
//!
//! The trybuild snapshots in `tests/ui/fail/handler_*.stderr` pin this behaviour.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use super::valid::{Settings, Spec};

pub(crate) fn registration(spec: &Spec<'_>) -> TokenStream {
    let root = crate::root::path();
    let ident = spec.ident;
    let name = ident.unraw().to_string();
    let options = options(&spec.options);
    let ev = spec.event;
    // The event type, known to the compiler only when it implements `Event` (see the module docs).
    let root_at_event = crate::root::path_at(ev.span());
    let event = quote_spanned! {ev.span()=>
        <<#ev as #root_at_event::Event>::Reply as __EventbusGate<#ev>>::Open
    };
    let (ctx, context) = match spec.context {
        Some(ty) => (
            quote!(__eventbus_ctx),
            Some(
                quote_spanned!(ty.span()=> <#ty as __EventbusContext>::__eventbus_context(__eventbus_ctx)),
            ),
        ),
        None => (quote!(_), None),
    };
    // The return value is converted at its type, so a wrong return type is reported there and
    // only there. `()` is read as `Ok(())`, reported at the name: a handler of a request event
    // that returns nothing then gets "expected `()`", pointing at the event's `reply = T`.
    let call = quote!(#ident(__EventbusSame::__eventbus_same(__eventbus_ev), #context).await);
    let output = match spec.output {
        Some(ty) => quote_spanned! {ty.span()=>
            <#ty as __EventbusReturn<#event>>::__eventbus_return(#call)
        },
        None => quote_spanned! {ident.span()=>
            <::core::result::Result<(), ::core::convert::Infallible> as __EventbusReturn<#event>>
                ::__eventbus_return(::core::result::Result::Ok(#call))
        },
    };
    // Spanned at the name: a future that is not `Send` is reported at the handler.
    let root_at_name = crate::root::path_at(ident.span());
    let make = quote_spanned! {ident.span()=>
        #root_at_name::__private::erase::<#event, _, _>(
            |__eventbus_ev: #event, #ctx: #root_at_name::Context| async move { #output },
        )
    };
    let helpers = helpers(spec.context.is_some());
    let dedup = dedup_needs_durable(spec);
    quote! {
        const _: () = {
            #helpers
            #dedup
            fn __eventbus_make() -> #root::handler::ErasedHandler {
                #make
            }
            #root::__private::inventory::submit! {
                #root::HandlerRegistration {
                    name: ::core::concat!(::core::module_path!(), "::", #name),
                    event: <#ev as #root::Event>::DESCRIPTOR,
                    options: #options,
                    make: __eventbus_make,
                }
            }
        };
    }
}

/// The traits the generated code goes through; see `registration`.
fn helpers(with_context: bool) -> TokenStream {
    let root = crate::root::path();
    let context = with_context.then(|| {
        quote! {
            #[diagnostic::on_unimplemented(
                message = "the second argument of a handler must be `Context`, not `{Self}`",
                label = "expected `Context`",
                note = "a handler is `async fn(ev: MyEvent)` or `async fn(ev: MyEvent, ctx: Context)`"
            )]
            trait __EventbusContext {
                fn __eventbus_context(ctx: #root::Context) -> Self;
            }
            impl __EventbusContext for #root::Context {
                fn __eventbus_context(ctx: #root::Context) -> Self {
                    ctx
                }
            }
        }
    });
    quote! {
        // `Open` is `T` once `Self` is known, and undecided while it is not.
        trait __EventbusGate<T> {
            type Open;
        }
        impl<T, R> __EventbusGate<T> for R {
            type Open = T;
        }
        // The identity, without letting the compiler infer one side from the other.
        trait __EventbusSame<T> {
            fn __eventbus_same(self) -> T;
        }
        impl<T> __EventbusSame<T> for T {
            fn __eventbus_same(self) -> T {
                self
            }
        }
        #[diagnostic::on_unimplemented(
            message = "`{Self}` is not a valid return type for a handler of `{E}`",
            label = "a handler of `{E}` returns `()` or `Result<R, E>` where `R` is the event's reply type (`()` unless declared with `#[event(reply = T)]`) and `E: Into<HandlerError>`"
        )]
        trait __EventbusReturn<E: #root::Event> {
            fn __eventbus_return(self) -> ::core::result::Result<<E as #root::Event>::Reply, #root::HandlerError>;
        }
        impl<E: #root::Event<Reply = ()>> __EventbusReturn<E> for () {
            fn __eventbus_return(self) -> ::core::result::Result<(), #root::HandlerError> {
                ::core::result::Result::Ok(())
            }
        }
        impl<E, Er> __EventbusReturn<E> for ::core::result::Result<<E as #root::Event>::Reply, Er>
        where
            E: #root::Event,
            Er: ::core::convert::Into<#root::HandlerError>,
        {
            fn __eventbus_return(self) -> ::core::result::Result<<E as #root::Event>::Reply, #root::HandlerError> {
                self.map_err(::core::convert::Into::into)
            }
        }
        #context
    }
}

/// With `dedup`: a constant that fails to evaluate when the event is ephemeral, spanned at the
/// `dedup` key, so the error points there. Only the compiler knows the event's durability.
fn dedup_needs_durable(spec: &Spec<'_>) -> Option<TokenStream> {
    let (key, _) = spec.options.dedup.as_ref()?;
    let ev = spec.event;
    let root = crate::root::path_at(key.span());
    let message = format!(
        "`dedup` needs a durable event, and `{}` is ephemeral: pub/sub delivers at most once \
         and never redelivers; drop `dedup`",
        quote!(#ev).to_string().replace(' ', "")
    );
    Some(quote_spanned! {key.span()=>
        const _: () = {
            if let #root::Durability::Ephemeral = <#ev as #root::Event>::DESCRIPTOR.durability {
                ::core::panic!(#message);
            }
        };
    })
}

/// `HandlerOptions::DEFAULT` with each given option applied.
fn options(s: &Settings) -> TokenStream {
    let root = crate::root::path();
    let mut out = quote!(#root::HandlerOptions::DEFAULT);
    if let Some(group) = &s.group {
        out = quote!(#out.group(#group));
    }
    if let Some(n) = s.concurrency {
        out = quote!(#out.concurrency(#n));
    }
    if let Some(n) = s.max_deliveries {
        out = quote!(#out.max_deliveries(#n));
    }
    if let Some(ms) = s.backoff_ms {
        out = quote!(#out.backoff(::core::time::Duration::from_millis(#ms)));
    }
    if let Some(ms) = s.backoff_max_ms {
        out = quote!(#out.backoff_max(::core::time::Duration::from_millis(#ms)));
    }
    if s.broadcast {
        out = quote!(#out.broadcast());
    }
    if let Some((_, secs)) = s.dedup {
        out = quote!(#out.dedup(::core::time::Duration::from_secs(#secs)));
    }
    out
}
