//! Code generation for `#[handler]`: the registration submitted to `inventory`, and the checks
//! only the compiler can make, each spanned at the token it is about and phrased by a
//! `#[diagnostic::on_unimplemented]` message of `eventbus_core`:
//!
//! * **event**: `<<E as Event>::Reply as __EventbusGate<E>>::Open` is `E` when `E: Event`. When it
//!   is not, the compiler reports "`E` is not an event" and cannot decide the type, and it does
//!   not report undecided types after an error: everything below, written in terms of that
//!   type, adds no error of its own. The registration's `<E as Event>::DESCRIPTOR` is spanned
//!   at the same type and gives the identical diagnostic, which the compiler prints once.
//! * **extractors**: each argument after the event goes through `FromContext` at its type
//!   ("`String` cannot be a handler argument").
//! * **return type**: converted by `HandlerReturn<E>` at its type, or at the name when there is
//!   none ("`()` is not a valid return type for a handler of `Ping`").
//! * **`Send`**: the call is boxed as a `Send` future at the handler's name, so a value held
//!   across an `.await` that is not `Send` gets the compiler's explanation there.
//! * **`dedup`, `broadcast`**: need a durable event, which only the compiler knows: the event
//!   must implement `DurableEvent`, required through an alias spanned at the option ("`Tick` is
//!   ephemeral, and `dedup` and `broadcast` need a durable event").
//!
//! The trybuild snapshots in `tests/ui/fail/handler_*.stderr` pin this behaviour.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
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
    let mut bindings = Vec::new();
    let mut arguments = Vec::new();
    let mut requirements = Vec::new();
    for (i, ty) in spec.extractors.iter().enumerate() {
        let var = format_ident!("__eventbus_arg{i}");
        let root_at_ty = crate::root::path_at(ty.span());
        let extractor = quote_spanned!(ty.span()=> <#ty as #root_at_ty::handler::FromContext>);
        bindings.push(quote! {
            let #var = #extractor::from_context(&__eventbus_ctx)?;
        });
        requirements.push(quote!(#extractor::required_state()));
        arguments.push(var);
    }
    let ctx = if spec.extractors.is_empty() {
        quote!(_)
    } else {
        quote!(__eventbus_ctx)
    };
    let call = quote! {
        #ident(__EventbusSame::__eventbus_same(__eventbus_ev) #(, #arguments)*).await
    };
    // The return value is converted at its type, so a wrong return type is reported there and
    // only there; no return type is `()`, reported at the name.
    let output = match spec.output {
        Some(ty) => {
            let root_at_ty = crate::root::path_at(ty.span());
            quote_spanned! {ty.span()=>
                <#ty as #root_at_ty::handler::HandlerReturn<#event>>::into_result(#call)
            }
        }
        None => {
            let root_at_name = crate::root::path_at(ident.span());
            quote_spanned! {ident.span()=>
                <() as #root_at_name::handler::HandlerReturn<#event>>::into_result(#call)
            }
        }
    };
    // Spanned at the name: boxing as a `Send` future is where a future that is not `Send` is
    // reported.
    let root_at_name = crate::root::path_at(ident.span());
    let make = quote_spanned! {ident.span()=>
        #root_at_name::__private::erase_call::<#event, _>(
            |__eventbus_ev: #event, #ctx: #root_at_name::Context|
                -> #root_at_name::__private::ReplyFuture<<#event as #root_at_name::Event>::Reply>
            {
                ::std::boxed::Box::pin(async move {
                    #(#bindings)*
                    #output
                })
            },
        )
    };
    let required_state = if requirements.is_empty() {
        quote!(::std::vec::Vec::new())
    } else {
        quote!([#(#requirements),*].into_iter().flatten().collect())
    };
    let durable_only = durable_only(&spec.options, ev);
    let helpers = helpers();
    quote! {
        const _: () = {
            #helpers
            fn __eventbus_make() -> #root::handler::ErasedHandler {
                #durable_only
                #make
            }
            fn __eventbus_required_state() -> ::std::vec::Vec<#root::StateRequirement> {
                #required_state
            }
            #root::__private::inventory::submit! {
                #root::HandlerRegistration {
                    name: ::core::concat!(::core::module_path!(), "::", #name),
                    event: <#ev as #root::Event>::DESCRIPTOR,
                    options: #options,
                    required_state: __eventbus_required_state,
                    make: __eventbus_make,
                }
            }
        };
    }
}

/// The traits the generated code goes through; see the module docs.
fn helpers() -> TokenStream {
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
    }
}

/// With `dedup` or `broadcast`: the event must be durable. The event type is written with its
/// outer tokens at the option, so that the error points there, and its `Event` projection at
/// the event type, so that a type that is no event is reported there only.
fn durable_only(s: &Settings, ev: &syn::Type) -> TokenStream {
    let dedup = s.dedup.as_ref().map(|(key, _)| key);
    let root_at_event = crate::root::path_at(ev.span());
    let reply = quote_spanned!(ev.span()=> <#ev as #root_at_event::Event>::Reply);
    let checks = [dedup, s.broadcast.as_ref()]
        .into_iter()
        .flatten()
        .map(|key| {
            let span = key.span();
            let root = crate::root::path_at(span);
            quote_spanned! {span=>
                <<#reply as __EventbusGate<#ev>>::Open as #root::DurableEvent>::__durable();
            }
        });
    quote!(#(#checks)*)
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
    if s.broadcast.is_some() {
        out = quote!(#out.broadcast());
    }
    if let Some((_, secs)) = s.dedup {
        out = quote!(#out.dedup(::core::time::Duration::from_secs(#secs)));
    }
    out
}
