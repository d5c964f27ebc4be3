//! Every check on a `#[derive(Event)]` input, and the [`Spec`] that `expand.rs` turns into code.
//!
//! Each check records its error in the [`Ctxt`] and validation goes on, so all errors are
//! reported together. Where a value is wrong the spec falls back to the default; it is only
//! expanded when there was no error at all.

use syn::{Ident, Member, Type};

use super::ast::{Durability, Field, Input, Shape};
use crate::ctxt::Ctxt;
use crate::meta;
use crate::name::{self, Piece, Template};

/// A validated event type: everything the impl needs.
pub(crate) struct Spec<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) name: Name,
    pub(crate) channel: Channel<'a>,
    pub(crate) durability: Durability,
    pub(crate) version: u32,
    pub(crate) max_len: Option<u64>,
    pub(crate) reply: Option<&'a Type>,
}

/// Where the event name comes from.
pub(crate) enum Name {
    /// The module path and the type name, joined with dots (known only in the generated code).
    TypePath(String),
    /// Given by `name`, or `module` plus the type name.
    Fixed(String),
}

/// The channel, when it differs from the name.
pub(crate) enum Channel<'a> {
    SameAsName,
    Fixed(String),
    /// A template: its fixed parts and the fields its placeholders name, in order.
    Template {
        template: String,
        pattern: String,
        parts: Vec<Part<'a>>,
    },
}

/// A piece of a channel template with its placeholder resolved to a field.
pub(crate) enum Part<'a> {
    Text(String),
    Field(&'a Field<'a>),
}

pub(crate) fn validate<'a>(cx: &Ctxt, input: &'a Input<'a>) -> Spec<'a> {
    shape(cx, input);
    let a = &input.attrs;
    let durability = a
        .durability
        .as_ref()
        .map_or(Durability::Durable, |d| d.value);
    let name = event_name(cx, input);
    let channel = channel(cx, input, durability);
    let max_len = a.max_len.as_ref().and_then(|m| {
        if durability == Durability::Ephemeral {
            cx.error_spanned_by(
                &m.key,
                "`max_len` bounds the stream of a durable event; an ephemeral event is not \
                 stored, so drop `max_len` or make the event durable",
            );
        }
        meta::number::<u64>(cx, &m.key, &m.value, 1)
    });
    let version = a
        .version
        .as_ref()
        .and_then(|v| meta::number::<u32>(cx, &v.key, &v.value, 1))
        .unwrap_or(1);
    Spec {
        ident: input.ident,
        name,
        channel,
        durability,
        version,
        max_len,
        reply: a.reply.as_ref().map(|r| &r.value),
    }
}

/// Event types are concrete structs or enums.
fn shape(cx: &Ctxt, input: &Input<'_>) {
    if let Shape::Union(token) = input.shape {
        cx.error_spanned_by(
            token,
            "an event cannot be a union: it is sent as JSON; use a struct or an enum",
        );
    }
    if let Some(generics) = crate::ctxt::generics_span(input.generics) {
        cx.error_spanned_by(
            generics,
            "event types cannot be generic: the channel name must be known at compile time; \
             use one concrete type per event",
        );
    }
}

fn event_name(cx: &Ctxt, input: &Input<'_>) -> Name {
    let a = &input.attrs;
    if let (Some(_), Some(module)) = (&a.name, &a.module) {
        cx.error_spanned_by(
            &module.key,
            "`name` already gives the full name; drop `module`",
        );
    }
    if let Some(n) = &a.name {
        name::check(cx, "name", &n.value);
        return Name::Fixed(n.value.value());
    }
    let type_name = input.type_name();
    // The type name becomes the last segment, so it obeys the channel rules too (an identifier
    // can only break them with non-ASCII letters).
    name::check_type_name(cx, input.ident, &type_name);
    match &a.module {
        Some(module) => {
            name::check(cx, "module", &module.value);
            Name::Fixed(format!("{}.{type_name}", module.value.value()))
        }
        None => Name::TypePath(type_name),
    }
}

fn channel<'a>(cx: &Ctxt, input: &'a Input<'a>, durability: Durability) -> Channel<'a> {
    let Some(setting) = &input.attrs.channel else {
        return Channel::SameAsName;
    };
    let lit = &setting.value;
    let Some(template) = Template::parse(cx, "channel", lit) else {
        return Channel::SameAsName;
    };
    if !template.is_templated() {
        return Channel::Fixed(lit.value());
    }
    if durability == Durability::Durable {
        cx.error_spanned_by(
            lit,
            "a channel template creates one channel per value; durable events map to one stream \
             per type, so use a fixed channel (partitioning of durable types is planned via \
             `partitions`/`key`), or mark the event `ephemeral` for live fan-out per value",
        );
    }
    let kind = match input.shape {
        Shape::Enum => Some("an enum"),
        Shape::Unit => Some("a unit struct"),
        _ => None,
    };
    if let Some(kind) = kind {
        cx.error_spanned_by(
            lit,
            format!(
                "a channel template fills its `{{placeholders}}` from the event's fields, but `{}` \
                 is {kind}; use a fixed channel",
                input.ident
            ),
        );
        return Channel::SameAsName;
    }
    let mut parts = Vec::new();
    for piece in &template.pieces {
        match piece {
            Piece::Text(text) => parts.push(Part::Text(text.clone())),
            Piece::Field(wanted) => match input.fields().iter().find(|f| &f.name == wanted) {
                Some(f) => parts.push(Part::Field(f)),
                None => cx.error_spanned_by(lit, missing_field(input, wanted)),
            },
        }
    }
    Channel::Template {
        template: lit.value(),
        pattern: template.pattern(),
        parts,
    }
}

fn missing_field(input: &Input<'_>, wanted: &str) -> String {
    let available = input
        .fields()
        .iter()
        .map(|f| match f.member {
            Member::Named(_) => format!("`{}`", f.name),
            Member::Unnamed(_) => format!("`{{{}}}`", f.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ident = input.ident;
    let available = if available.is_empty() {
        "it has none".to_owned()
    } else {
        format!("its fields are {available}")
    };
    format!(
        "the channel template names `{{{wanted}}}`, but `{ident}` has no field `{wanted}`; {available}"
    )
}
