//! Channel names: validation and Redis-style glob matching.
//!
//! A channel name is a dot-separated list of non-empty segments made of ASCII letters, digits,
//! `_`, `-` and `:`. The same rules are checked at compile time by `#[derive(Event)]` for names
//! written in attributes, and at run time for values filled into channel templates and for the
//! bus namespace.

use std::fmt;

/// Why a channel name was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// Two dots in a row, or a dot at either end.
    #[error("channel name `{0}` has an empty segment")]
    EmptySegment(String),
    /// A character outside the allowed set.
    #[error(
        "channel name `{name}` contains {what} at byte {at}; allowed are ASCII letters, digits, `_`, `-`, `:` and `.` between segments"
    )]
    BadChar {
        /// The name.
        name: String,
        /// A description of the character (`whitespace`, `the glob character '*'`, ...).
        what: Forbidden,
        /// Byte offset.
        at: usize,
    },
}

/// A character that may not appear in a channel name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forbidden(pub char);

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            c if c.is_whitespace() => write!(f, "whitespace {c:?}"),
            c @ ('*' | '?' | '[' | ']') => write!(f, "the glob character '{c}'"),
            c => write!(f, "the character {c:?}"),
        }
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')
}

/// Checks a concrete channel name (no templates, no glob characters).
///
/// ```
/// use eventbus_core::channel::validate_channel;
/// assert!(validate_channel("shop.orders.OrderCreated").is_ok());
/// assert!(validate_channel("shop..orders").is_err());
/// assert!(validate_channel("tenant.*.presence").is_err());
/// ```
pub fn validate_channel(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.split('.').any(str::is_empty) {
        return Err(ChannelError::EmptySegment(name.to_owned()));
    }
    for (at, c) in name.char_indices() {
        if c != '.' && !allowed(c) {
            return Err(ChannelError::BadChar {
                name: name.to_owned(),
                what: Forbidden(c),
                at,
            });
        }
    }
    Ok(())
}

/// Matches `text` against a Redis glob pattern (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`), the
/// rules of `PSUBSCRIBE`.
///
/// ```
/// use eventbus_core::channel::glob_match;
/// assert!(glob_match("tenant.*.presence", "tenant.acme.presence"));
/// assert!(glob_match("h?llo", "hallo"));
/// assert!(glob_match("h[ae]llo", "hello"));
/// assert!(!glob_match("h[^e]llo", "hello"));
/// ```
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob(pattern.as_bytes(), text.as_bytes())
}

fn glob(mut p: &[u8], mut t: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice, no recursion depth.
    let mut star: Option<(&[u8], &[u8])> = None;
    loop {
        match p.first() {
            Some(b'*') => {
                while p.first() == Some(&b'*') {
                    p = &p[1..];
                }
                if p.is_empty() {
                    return true;
                }
                star = Some((p, t));
                continue;
            }
            Some(_) if !t.is_empty() => {
                if let Some((len, ok)) = match_one(p, t[0])
                    && ok
                {
                    p = &p[len..];
                    t = &t[1..];
                    continue;
                }
            }
            None if t.is_empty() => return true,
            _ => {}
        }
        // Mismatch: let the last star swallow one more byte, or fail.
        match star {
            Some((sp, st)) if !st.is_empty() => {
                star = Some((sp, &st[1..]));
                p = sp;
                t = &st[1..];
            }
            _ => return false,
        }
    }
}

/// Matches one pattern element at the start of `p` against `c`; returns its length and result.
fn match_one(p: &[u8], c: u8) -> Option<(usize, bool)> {
    match p[0] {
        b'?' => Some((1, true)),
        b'\\' if p.len() > 1 => Some((2, p[1] == c)),
        b'[' => {
            let mut i = 1;
            let negate = p.get(1) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            while i < p.len() && p[i] != b']' {
                if p[i] == b'\\' && i + 1 < p.len() {
                    hit |= p[i + 1] == c;
                    i += 2;
                } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                    let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                    hit |= (lo..=hi).contains(&c);
                    i += 3;
                } else {
                    hit |= p[i] == c;
                    i += 1;
                }
            }
            // An unterminated class runs to the end of the pattern, as in Redis.
            let len = (i + 1).min(p.len());
            Some((len, hit != negate))
        }
        other => Some((1, other == c)),
    }
}

/// True when `s` contains a glob metacharacter.
pub fn is_glob(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Checks a value about to be filled into a channel template: it must be a valid, non-empty
/// part of a channel name (dots allowed, they add segments).
pub fn validate_template_value(value: &str) -> Result<(), ChannelError> {
    validate_channel(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_follows_redis_rules() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("orders.*", "orders.eu.created"));
        assert!(glob_match("h[a-c]llo", "hbllo"));
        assert!(!glob_match("h[a-c]llo", "hdllo"));
        assert!(glob_match(r"a\*b", "a*b"));
        assert!(!glob_match(r"a\*b", "axb"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("ab?", "abc"));
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(validate_channel(""), Err(ChannelError::Empty));
        assert!(matches!(
            validate_channel("a. b"),
            Err(ChannelError::BadChar { at: 2, .. })
        ));
        assert!(matches!(
            validate_channel(".a"),
            Err(ChannelError::EmptySegment(_))
        ));
        assert!(validate_channel("tenant-1.orders:v2").is_ok());
    }
}
