//! Error collection (serde_derive's `Ctxt`): every check records its error here and goes on, so
//! the user sees all mistakes of one item at once, each pointing at its own token.

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// The errors found so far while reading one item.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An error covering `tokens` (from their first to their last token).
    pub(crate) fn error_spanned_by<T: ToTokens, M: Display>(&self, tokens: T, msg: M) {
        self.errors
            .borrow_mut()
            .push(syn::Error::new_spanned(tokens.into_token_stream(), msg));
    }

    /// An error at one span.
    pub(crate) fn error_at<M: Display>(&self, span: Span, msg: M) {
        self.errors.borrow_mut().push(syn::Error::new(span, msg));
    }

    /// An error that syn produced while parsing.
    pub(crate) fn syn_error(&self, err: syn::Error) {
        self.errors.borrow_mut().push(err);
    }

    /// `Err` with every error as `compile_error!`s, or `Ok` when there was none.
    pub(crate) fn check(self) -> Result<(), TokenStream> {
        let errors = self.errors.into_inner();
        if errors.is_empty() {
            return Ok(());
        }
        Err(errors.iter().map(syn::Error::to_compile_error).collect())
    }
}

/// The tokens of `generics` to point an error at, when there are any: the parameters, or a
/// lone `where` clause. Both macros refuse generics.
pub(crate) fn generics_span(generics: &syn::Generics) -> Option<proc_macro2::TokenStream> {
    if generics.params.is_empty() {
        generics
            .where_clause
            .as_ref()
            .map(quote::ToTokens::to_token_stream)
    } else {
        Some(quote::ToTokens::to_token_stream(generics))
    }
}
