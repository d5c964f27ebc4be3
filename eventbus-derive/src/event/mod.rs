//! `#[derive(Event)]`: parse ([`ast`], [`attr`]) -> validate ([`valid`]) -> expand ([`expand`]).

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro2::TokenStream;
use quote::quote;

use crate::ctxt::Ctxt;

/// The derive's output for `node`: the impl, or the errors and a stub impl.
pub(crate) fn derive(node: &syn::DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let input = ast::Input::from_syn(&cx, node);
    let spec = valid::validate(&cx, &input);
    match cx.check() {
        Ok(()) => expand::event(&spec),
        Err(errors) => {
            let stub = expand::stub(&input);
            quote!(#errors #stub)
        }
    }
}
