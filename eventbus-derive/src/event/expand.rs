//! Code generation for `#[derive(Event)]`: the `impl Event`, the `impl Request` of request events,
//! and the registration that the topology snapshot and the duplicate-channel check read.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::ast::{Durability, Input, Shape};
use super::valid::{Channel, Name, Part, Spec};

pub(crate) fn event(spec: &Spec<'_>) -> TokenStream {
    let root = crate::root::path();
    let ident = spec.ident;
    let type_name = syn::ext::IdentExt::unraw(ident).to_string();
    let name = match &spec.name {
        // A proc macro cannot see the module path: the generated code computes it.
        Name::TypePath(type_name) => quote! {
            #root::__private::dotted_path!(::core::module_path!(), #type_name)
        },
        Name::Fixed(name) => quote!(#name),
    };
    let (channel, pattern) = match &spec.channel {
        Channel::SameAsName => (name.clone(), name.clone()),
        Channel::Fixed(channel) => (quote!(#channel), quote!(#channel)),
        Channel::Template {
            template, pattern, ..
        } => (quote!(#template), quote!(#pattern)),
    };
    let durability = match spec.durability {
        Durability::Durable => quote!(#root::Durability::Durable),
        Durability::Ephemeral => quote!(#root::Durability::Ephemeral),
    };
    let version = spec.version;
    let max_len = option(spec.max_len.map(|n| quote!(#n)));
    let reply_name = option(spec.reply.map(|ty| {
        let name = written(ty);
        quote!(#name)
    }));
    let reply = match spec.reply {
        Some(ty) => quote!(#ty),
        None => quote!(()),
    };
    let request = spec.reply.map(|_| {
        quote! {
            #[automatically_derived]
            impl #root::Request for #ident {}
        }
    });
    let channel_fn = channel_fn(&spec.channel);
    let durable = durable_marker(ident, spec.durability);
    // One constant for the impl and the registration: the registration then does not need the
    // impl to hold, so a type without `Serialize` gets that error once, not once more here.
    quote! {
        const _: () = {
            const __EVENTBUS_DESCRIPTOR: #root::EventDescriptor = #root::EventDescriptor {
                rust_type: ::core::concat!(::core::module_path!(), "::", #type_name),
                name: #name,
                channel: #channel,
                pattern: #pattern,
                durability: #durability,
                version: #version,
                max_len: #max_len,
                reply: #reply_name,
            };
            #[automatically_derived]
            impl #root::Event for #ident {
                const DESCRIPTOR: #root::EventDescriptor = __EVENTBUS_DESCRIPTOR;
                type Reply = #reply;
                #channel_fn
            }
            #request
            #durable
            #root::__private::inventory::submit! {
                #root::EventRegistration { descriptor: __EVENTBUS_DESCRIPTOR }
            }
        };
    }
}

/// `DurableEvent` for durable events: `#[handler(dedup)]` and `#[handler(broadcast)]` require
/// it, so the compiler reports those options on an ephemeral event, at the option. Not listed
/// as a candidate in that error (`do_not_recommend`): a list of other events would not help.
fn durable_marker(ident: &syn::Ident, durability: Durability) -> Option<TokenStream> {
    let root = crate::root::path();
    (durability == Durability::Durable).then(|| {
        quote! {
            #[automatically_derived]
            #[diagnostic::do_not_recommend]
            impl #root::DurableEvent for #ident {}
        }
    })
}

/// `fn channel(&self)` for a template: the fixed parts and the fields' `Display` output, appended
/// in order. Each field is passed as `&dyn Display` at the field's span, so a field without
/// `Display` is reported at the field, in the compiler's words.
fn channel_fn(channel: &Channel<'_>) -> Option<TokenStream> {
    let Channel::Template { parts, .. } = channel else {
        return None;
    };
    let root = crate::root::path();
    let capacity: usize = parts
        .iter()
        .map(|p| match p {
            Part::Text(text) => text.len(),
            // Room for a short value, so that most channels need one allocation.
            Part::Field(_) => 16,
        })
        .sum();
    let steps = parts.iter().map(|p| match p {
        Part::Text(text) => quote!(__eventbus_channel.push_str(#text);),
        Part::Field(f) => {
            let member = &f.member;
            let value = quote_spanned!(f.ty.span()=> &self.#member);
            quote!(#root::__private::push_display(&mut __eventbus_channel, #value);)
        }
    });
    Some(quote! {
        fn channel(&self) -> ::std::borrow::Cow<'static, str> {
            let mut __eventbus_channel = ::std::string::String::with_capacity(#capacity);
            #(#steps)*
            ::std::borrow::Cow::Owned(__eventbus_channel)
        }
    })
}

/// The impl emitted next to the errors, so that uses of the type elsewhere do not add a cascade
/// of "not an event" errors. A generic type gets one that holds where the type is serializable.
pub(crate) fn stub(input: &Input<'_>) -> TokenStream {
    let root = crate::root::path();
    if let Shape::Union(_) = input.shape {
        return TokenStream::new();
    }
    let ident = input.ident;
    let name = input.type_name();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned();
    if !input.generics.params.is_empty() {
        where_clause
            .get_or_insert_with(|| syn::parse_quote!(where))
            .predicates
            .push(syn::parse_quote! {
                Self: #root::prelude::Serialize
                    + for<'__de> #root::prelude::Deserialize<'__de>
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static
            });
    }
    let reply = input.attrs.reply.as_ref().map(|r| &r.value);
    let request = reply.map(
        |_| quote!(impl #impl_generics #root::Request for #ident #ty_generics #where_clause {}),
    );
    let reply = match reply {
        Some(ty) => quote!(#ty),
        None => quote!(()),
    };
    let ephemeral = input
        .attrs
        .durability
        .as_ref()
        .is_some_and(|d| d.value == Durability::Ephemeral);
    let durable = (!ephemeral).then(|| {
        quote! {
            #[diagnostic::do_not_recommend]
            impl #impl_generics #root::DurableEvent for #ident #ty_generics #where_clause {}
        }
    });
    quote! {
        const _: () = {
            #durable
            impl #impl_generics #root::Event for #ident #ty_generics #where_clause {
                const DESCRIPTOR: #root::EventDescriptor = #root::EventDescriptor {
                    rust_type: #name,
                    name: #name,
                    channel: #name,
                    pattern: #name,
                    durability: #root::Durability::Durable,
                    version: 1,
                    max_len: ::core::option::Option::None,
                    reply: ::core::option::Option::None,
                };
                type Reply = #reply;
            }
            #request
        };
    }
}

/// A type as written, without the spaces token streams print (`Vec<String>`, not `Vec < String >`).
fn written(ty: &syn::Type) -> String {
    let mut s = quote!(#ty).to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        s = s.replace(from, to);
    }
    s
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_names_read_as_written() {
        for written in [
            "UserFound",
            "Vec<String>",
            "std::collections::HashMap<String, Vec<u8>>",
            "::core::option::Option<&'static str>",
            "(u8, [u8; 4])",
        ] {
            let ty: syn::Type = syn::parse_str(written).unwrap();
            assert_eq!(super::written(&ty), written);
        }
    }
}
