//! Reading the `key`, `key = "text"`, `key = 42` and `key = Type` entries of `#[event(...)]` and
//! `#[handler(...)]`, shared by both macros.
//!
//! Every function here records a mistake in the [`Ctxt`] and consumes the rest of the entry, so
//! parsing goes on with the next key: one wrong value does not hide the errors after it. An
//! `Err` is returned only for input that cannot be read on (a missing `=` and the like).

use std::fmt::Display;
use std::str::FromStr;

use proc_macro2::TokenTree;
use syn::meta::ParseNestedMeta;
use syn::{Expr, Ident, Lit, LitInt, LitStr, Token};

use crate::ctxt::Ctxt;

/// A value given in an attribute, with the key that set it (for error spans).
pub(crate) struct Setting<T> {
    pub(crate) key: Ident,
    pub(crate) value: T,
}

/// Stores `value` for `key`, or reports the key as a duplicate.
pub(crate) fn set<T>(cx: &Ctxt, slot: &mut Option<Setting<T>>, key: &Ident, value: T) {
    match slot {
        Some(_) => cx.error_spanned_by(key, format!("duplicate `{key}`: it is already set above")),
        None => {
            *slot = Some(Setting {
                key: key.clone(),
                value,
            })
        }
    }
}

/// A flag such as `ephemeral`: takes no value.
pub(crate) fn flag(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: &Ident, attr: &str) -> bool {
    if meta.input.is_empty() || meta.input.peek(Token![,]) {
        return true;
    }
    cx.error_spanned_by(
        key,
        format!("`{key}` is a flag and takes no value: write `#[{attr}({key})]`"),
    );
    skip_value(meta);
    false
}

/// `key = "text"`.
pub(crate) fn string(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
    example: &str,
) -> syn::Result<Option<LitStr>> {
    match literal(meta)? {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(Some(s)),
        other => {
            cx.error_spanned_by(
                other,
                format!("`{key}` takes a string literal: `{key} = \"{example}\"`"),
            );
            Ok(None)
        }
    }
}

/// `key = 42`.
pub(crate) fn integer(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
    example: &str,
) -> syn::Result<Option<LitInt>> {
    match literal(meta)? {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(n), ..
        }) => Ok(Some(n)),
        other => {
            cx.error_spanned_by(
                other,
                format!("`{key}` takes a whole number: `{key} = {example}`"),
            );
            Ok(None)
        }
    }
}

/// `key = Type`.
pub(crate) fn ty(
    cx: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    key: &Ident,
) -> syn::Result<Option<syn::Type>> {
    let input = meta.value()?;
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let hint = lit.value();
        cx.error_spanned_by(
            lit,
            format!("`{key}` takes a type, not a string: `{key} = {hint}`"),
        );
        return Ok(None);
    }
    input.parse().map(Some)
}

/// A key that is not one of `valid`: an error at the key, with a suggestion when one is close.
pub(crate) fn unknown(cx: &Ctxt, meta: &ParseNestedMeta<'_>, attr: &str, valid: &[&str]) {
    let path = &meta.path;
    let name = quote::quote!(#path).to_string().replace(' ', "");
    let list = valid
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match closest(&name, valid) {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    };
    cx.error_spanned_by(
        path,
        format!("unknown `{attr}` attribute `{name}`{hint}; expected one of {list}"),
    );
    skip_value(meta);
}

/// A key that was renamed: an error at the key that shows the entry with the new name. The
/// value is not read, so the error is the only one for this entry.
pub(crate) fn renamed(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: &Ident, new: &str) {
    let mut value = proc_macro2::TokenStream::new();
    while !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        match meta.input.parse::<TokenTree>() {
            Ok(token) => value.extend([token]),
            Err(_) => break,
        }
    }
    let value = value.to_string();
    let entry = match value.strip_prefix('=') {
        Some(v) => format!("{new} = {}", v.trim()),
        None => format!("{new}{value}"),
    };
    cx.error_spanned_by(
        key,
        format!("`{key}` was renamed to `{new}`: write `{entry}`"),
    );
}

/// The value of `lit` as a number of type `N` that is at least `min`, or an error at the literal.
pub(crate) fn number<N>(cx: &Ctxt, key: &Ident, lit: &LitInt, min: N) -> Option<N>
where
    N: FromStr + PartialOrd + Display + Bounded,
    N::Err: Display,
{
    match lit.base10_parse::<N>() {
        Ok(n) if n >= min => Some(n),
        Ok(_) => {
            cx.error_spanned_by(lit, format!("`{key}` must be at least {min}"));
            None
        }
        Err(_) => {
            cx.error_spanned_by(
                lit,
                format!("`{key}` is too large: at most {}", N::MAX_VALUE),
            );
            None
        }
    }
}

/// The largest value of an integer type, for messages.
pub(crate) trait Bounded {
    const MAX_VALUE: Self;
}

macro_rules! bounded {
    ($($t:ty),*) => { $(impl Bounded for $t { const MAX_VALUE: Self = <$t>::MAX; })* };
}
bounded!(u32, u64, usize);

/// `= <expression>`, looking through the invisible groups `macro_rules!` may wrap it in.
fn literal(meta: &ParseNestedMeta<'_>) -> syn::Result<Expr> {
    let mut expr: Expr = meta.value()?.parse()?;
    while let Expr::Group(g) = expr {
        expr = *g.expr;
    }
    Ok(expr)
}

/// Consumes the rest of an entry (`= ...` or `(...)`) up to the next comma.
fn skip_value(meta: &ParseNestedMeta<'_>) {
    while !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        if meta.input.parse::<TokenTree>().is_err() {
            break;
        }
    }
}

/// The valid key closest to `name`, if it is a likely typo (`group` for `groups`).
fn closest<'a>(name: &str, valid: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let name = norm(name);
    valid
        .iter()
        .map(|k| (distance(&name, &norm(k)), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, for typo suggestions on short keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
