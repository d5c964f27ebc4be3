//! The path the generated code starts from: `::eventbus_core` when the user's crate depends on
//! it, `::eventbus` when it depends on the facade only (which re-exports all of core), under
//! whatever name the user's `Cargo.toml` gives either.

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream};
use quote::quote_spanned;

/// `::eventbus_core`, or the facade crate's path when core is not a direct dependency.
pub(crate) fn path() -> TokenStream {
    path_at(Span::call_site())
}

/// [`path`] with every token at `span`, for code whose errors must point at the user's token.
pub(crate) fn path_at(span: Span) -> TokenStream {
    let found = crate_name("eventbus-core")
        .map(|found| (found, "eventbus_core"))
        .or_else(|_| crate_name("eventbus").map(|found| (found, "eventbus")));
    match found {
        // Inside a crate's own tests, benches and doctests the crate is still an extern crate.
        Ok((FoundCrate::Itself, name)) => ident_path(name, span),
        Ok((FoundCrate::Name(name), _)) => ident_path(&name, span),
        Err(_) => ident_path("eventbus_core", span),
    }
}

fn ident_path(name: &str, span: Span) -> TokenStream {
    let ident = syn::Ident::new(name, span);
    quote_spanned!(span=> ::#ident)
}
