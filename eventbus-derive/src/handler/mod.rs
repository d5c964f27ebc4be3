//! `#[handler]`: parse ([`attr`]) -> validate ([`valid`]) -> expand ([`mod@expand`]).
//!
//! The function itself is always emitted unchanged; after an error nothing else is, so the user
//! sees the errors about the handler and no follow-ups from generated code.

mod attr;
mod expand;
mod valid;

use proc_macro2::TokenStream;
use quote::quote;

use crate::ctxt::Ctxt;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let options = attr::parse(&cx, args);
    let spec = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Fn(f)) => Some(f),
        Ok(other) => {
            cx.error_spanned_by(
                other,
                "`#[handler]` goes on an `async fn`: `async fn name(ev: MyEvent) { ... }`",
            );
            None
        }
        // Not an item at all: the compiler reports the syntax error on the tokens we give back.
        Err(_) => None,
    };
    let spec = spec
        .as_ref()
        .and_then(|f| valid::validate(&cx, f, &options));
    match (cx.check(), spec) {
        (Ok(()), Some(spec)) => {
            let registration = expand::registration(&spec);
            quote!(#item #registration)
        }
        (Err(errors), _) => quote!(#item #errors),
        (Ok(()), None) => item,
    }
}
