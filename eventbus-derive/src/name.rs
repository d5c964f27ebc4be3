//! The channel-name rules, checked at compile time on every name written in an attribute
//! (`name`, `module`, `channel`, a handler's `group`), and the `{field}` channel templates.
//!
//! A channel name is a dot-separated list of non-empty segments made of ASCII letters, digits,
//! `_`, `-` and `:`: the rules of `eventbus_core::channel::validate_channel`, which checks the
//! same at run time. Glob characters (`* ? [ ]`) are for subscription patterns only.
//!
//! Stable Rust cannot point inside a string literal, so each error covers the whole literal and
//! names the offending character and its byte offset.

use std::ops::Range;

use syn::LitStr;

use crate::ctxt::Ctxt;

/// Checks the name in `lit`, given as attribute `what`; records an error and returns `false` when
/// it breaks the rules.
pub(crate) fn check(cx: &Ctxt, what: &str, lit: &LitStr) -> bool {
    match problem(&lit.value(), &[]) {
        None => true,
        Some(msg) => {
            cx.error_spanned_by(lit, format!("`{what}` {msg}"));
            false
        }
    }
}

/// Checks a type name that becomes the last segment of the default channel name.
pub(crate) fn check_type_name(cx: &Ctxt, ident: &syn::Ident, type_name: &str) -> bool {
    match problem(type_name, &[]) {
        None => true,
        Some(msg) => {
            cx.error_spanned_by(
                ident,
                format!(
                    "the type name is the last segment of the event's channel, but {msg}; \
                     give the event a name: `#[event(name = \"...\")]`"
                ),
            );
            false
        }
    }
}

/// What is wrong with `name`, if anything. Bytes in `holes` are `{field}` placeholders: they count
/// as segment content and are not checked.
fn problem(name: &str, holes: &[Range<usize>]) -> Option<String> {
    const RULE: &str =
        "channel names are dot-separated segments of ASCII letters, digits, `_`, `-` and `:`";
    if name.is_empty() {
        return Some(format!("is empty; {RULE}, e.g. \"shop.orders\""));
    }
    let mut segment_start = 0;
    for (at, c) in name.char_indices() {
        if holes.iter().any(|h| h.contains(&at)) {
            continue;
        }
        if c == '.' {
            if at == segment_start {
                return Some(empty_segment(name, at));
            }
            segment_start = at + 1;
        } else if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')) {
            let (what, hint) = forbidden(c);
            return Some(format!(
                "{name:?} contains {what} at byte {at}; {RULE}{hint}"
            ));
        }
    }
    if segment_start == name.len() {
        return Some(empty_segment(name, name.len() - 1));
    }
    None
}

fn empty_segment(name: &str, at: usize) -> String {
    let why = if at == 0 {
        "it starts with a dot".to_owned()
    } else if at == name.len() - 1 {
        "it ends with a dot".to_owned()
    } else {
        format!("two dots in a row at byte {}", at - 1)
    };
    format!("{name:?} has an empty segment ({why}); segments between dots must not be empty")
}

/// How to name a forbidden character in a message, and a hint on what to do instead.
fn forbidden(c: char) -> (String, &'static str) {
    match c {
        c if c.is_whitespace() => (format!("whitespace {c:?}"), ""),
        '*' | '?' | '[' | ']' => (
            format!("the glob character '{c}'"),
            "; glob characters belong in subscription patterns, an event's channel is concrete",
        ),
        '{' | '}' => (
            format!("the character '{c}'"),
            "; `{field}` placeholders are allowed only in `channel`",
        ),
        c => (format!("the character {c:?}"), ""),
    }
}

/// A channel, possibly with `{field}` placeholders: `tenant.{tenant}.presence`.
pub(crate) struct Template {
    pub(crate) pieces: Vec<Piece>,
}

/// A fixed part of a template or a placeholder.
#[derive(Debug)]
pub(crate) enum Piece {
    Text(String),
    /// A field name, or a tuple index such as `0`.
    Field(String),
}

impl Template {
    /// Parses and checks `lit` (attribute `what`); records every error and returns `None` after one.
    pub(crate) fn parse(cx: &Ctxt, what: &str, lit: &LitStr) -> Option<Template> {
        let value = lit.value();
        let (pieces, holes) = match split(&value) {
            Ok(split) => split,
            Err(msg) => {
                cx.error_spanned_by(lit, format!("`{what}` {value:?}: {msg}"));
                return None;
            }
        };
        if let Some(msg) = problem(&value, &holes) {
            cx.error_spanned_by(lit, format!("`{what}` {msg}"));
            return None;
        }
        Some(Template { pieces })
    }

    /// The placeholders, in order.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field(f) => Some(f.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// True when the template has at least one placeholder.
    pub(crate) fn is_templated(&self) -> bool {
        self.fields().next().is_some()
    }

    /// The subscription pattern: every placeholder becomes `*`.
    pub(crate) fn pattern(&self) -> String {
        self.render("*")
    }

    fn render(&self, hole: &str) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Field(_) => hole,
            })
            .collect()
    }
}

/// Splits a template into pieces; also returns the byte ranges of the placeholders.
fn split(value: &str) -> Result<(Vec<Piece>, Vec<Range<usize>>), String> {
    let mut pieces = Vec::new();
    let mut holes = Vec::new();
    let mut text_start = 0;
    let mut at = 0;
    while let Some(c) = value[at..].chars().next() {
        match c {
            '{' => {
                let Some(close) = value[at + 1..].find(['{', '}']).map(|i| at + 1 + i) else {
                    return Err(format!(
                        "`{{` at byte {at} is never closed; placeholders are written `{{field}}`"
                    ));
                };
                if value[close..].starts_with('{') {
                    return Err(format!(
                        "`{{` at byte {at} is never closed before the next `{{`; placeholders are written `{{field}}`"
                    ));
                }
                let field = &value[at + 1..close];
                if field.is_empty() {
                    return Err(format!(
                        "empty placeholder `{{}}` at byte {at}; name the field, e.g. `{{tenant}}`"
                    ));
                }
                if !is_field_name(field) {
                    return Err(format!(
                        "`{{{field}}}` at byte {at} is not a field name; placeholders name a field (`{{tenant}}`) or a tuple index (`{{0}}`)"
                    ));
                }
                if text_start < at {
                    pieces.push(Piece::Text(value[text_start..at].to_owned()));
                }
                pieces.push(Piece::Field(field.to_owned()));
                holes.push(at..close + 1);
                text_start = close + 1;
                at = close + 1;
                continue;
            }
            '}' => {
                return Err(format!(
                    "`}}` at byte {at} closes no placeholder; placeholders are written `{{field}}`"
                ));
            }
            _ => {}
        }
        at += c.len_utf8();
    }
    if text_start < value.len() {
        pieces.push(Piece::Text(value[text_start..].to_owned()));
    }
    Ok((pieces, holes))
}

/// An identifier or a tuple index.
fn is_field_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_digit() => s.chars().all(|c| c.is_ascii_digit()),
        Some(c) if c.is_alphabetic() || c == '_' => {
            chars.all(|c| c.is_alphanumeric() || c == '_') && s != "_"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_runtime_rules() {
        assert_eq!(problem("shop.orders.OrderCreated", &[]), None);
        assert_eq!(problem("tenant-1.orders:v2", &[]), None);
        assert!(problem("", &[]).unwrap().contains("is empty"));
        assert!(
            problem("a..b", &[])
                .unwrap()
                .contains("two dots in a row at byte 1")
        );
        assert!(problem(".a", &[]).unwrap().contains("starts with a dot"));
        assert!(problem("a.", &[]).unwrap().contains("ends with a dot"));
        assert!(
            problem("a. b", &[])
                .unwrap()
                .contains("whitespace ' ' at byte 2")
        );
        assert!(
            problem("a.*", &[])
                .unwrap()
                .contains("glob character '*' at byte 2")
        );
    }

    #[test]
    fn templates_split_into_text_and_fields() {
        let (pieces, holes) = split("tenant.{tenant}.presence").unwrap();
        assert_eq!(holes, vec![7..15]);
        let t = Template { pieces };
        assert_eq!(t.pattern(), "tenant.*.presence");
        assert_eq!(t.fields().collect::<Vec<_>>(), ["tenant"]);
        assert_eq!(problem("tenant.{tenant}.presence", &holes), None);
        assert_eq!(problem("{a}.{0}", &split("{a}.{0}").unwrap().1), None);
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(split("a.{b").unwrap_err().contains("never closed"));
        assert!(split("a.{b{c}}").unwrap_err().contains("before the next"));
        assert!(split("a.b}").unwrap_err().contains("closes no placeholder"));
        assert!(split("a.{}").unwrap_err().contains("empty placeholder"));
        assert!(split("a.{b c}").unwrap_err().contains("not a field name"));
        let holes = split("a.{b}.").unwrap().1;
        assert!(
            problem("a.{b}.", &holes)
                .unwrap()
                .contains("ends with a dot")
        );
    }
}
