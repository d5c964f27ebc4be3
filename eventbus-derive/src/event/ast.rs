//! The input of `#[derive(Event)]` as plain data.

use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, Generics, Ident, Member, Token, Type};

use super::attr::{self, Attrs};
use crate::ctxt::Ctxt;

/// The type the derive is on.
pub(crate) struct Input<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) shape: Shape<'a>,
    pub(crate) attrs: Attrs,
}

/// What kind of type it is.
pub(crate) enum Shape<'a> {
    /// `struct X { a: A }`
    Named(Vec<Field<'a>>),
    /// `struct X(A);`
    Tuple(Vec<Field<'a>>),
    /// `struct X;`
    Unit,
    Enum,
    Union(&'a Token![union]),
}

/// A field, as a `{field}` placeholder can name it.
pub(crate) struct Field<'a> {
    /// The name a placeholder uses: the identifier without `r#`, or the tuple index.
    pub(crate) name: String,
    /// How the generated code reaches it: `self.tenant` or `self.0`.
    pub(crate) member: Member,
    pub(crate) ty: &'a Type,
}

/// Whether the event type is kept until handled or fanned out live.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Durable,
    Ephemeral,
}

impl<'a> Input<'a> {
    pub(crate) fn from_syn(cx: &Ctxt, node: &'a DeriveInput) -> Self {
        let shape = match &node.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(_) => Shape::Named(fields(&s.fields)),
                Fields::Unnamed(_) => Shape::Tuple(fields(&s.fields)),
                Fields::Unit => Shape::Unit,
            },
            Data::Enum(_) => Shape::Enum,
            Data::Union(u) => Shape::Union(&u.union_token),
        };
        Input {
            ident: &node.ident,
            generics: &node.generics,
            shape,
            attrs: attr::parse(cx, &node.attrs),
        }
    }

    /// The fields a template can name (none for enums, unit structs and unions).
    pub(crate) fn fields(&self) -> &[Field<'a>] {
        match &self.shape {
            Shape::Named(f) | Shape::Tuple(f) => f,
            Shape::Unit | Shape::Enum | Shape::Union(_) => &[],
        }
    }

    /// The type name without `r#`: the last segment of the default channel name.
    pub(crate) fn type_name(&self) -> String {
        self.ident.unraw().to_string()
    }
}

fn fields(fields: &Fields) -> Vec<Field<'_>> {
    fields
        .iter()
        .zip(fields.members())
        .map(|(f, member)| Field {
            name: match &member {
                Member::Named(ident) => ident.unraw().to_string(),
                Member::Unnamed(index) => index.index.to_string(),
            },
            member,
            ty: &f.ty,
        })
        .collect()
}
