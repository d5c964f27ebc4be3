//! The event types of the suite.
//!
//! Their `Event` impls are written out here instead of derived: `#[derive(Event)]` registers
//! every type in the event registry, and these would then show in the topology (and its snapshot
//! test) of every binary built with the `conformance` feature.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::event::{Durability, Event, EventDescriptor, Request};

/// The descriptor of an untemplated suite event.
const fn descriptor(
    rust_type: &'static str,
    name: &'static str,
    durability: Durability,
    reply: Option<&'static str>,
) -> EventDescriptor {
    EventDescriptor {
        rust_type,
        name,
        channel: name,
        pattern: name,
        durability,
        version: 1,
        max_len: None,
        reply,
    }
}

macro_rules! suite_event {
    ($ty:ident, $name:literal, $durability:ident, reply = $reply:ty) => {
        impl Event for $ty {
            const DESCRIPTOR: EventDescriptor = descriptor(
                concat!(module_path!(), "::", stringify!($ty)),
                $name,
                Durability::$durability,
                Some(stringify!($reply)),
            );
            type Reply = $reply;
        }
        impl Request for $ty {}
    };
    ($ty:ident, $name:literal, $durability:ident) => {
        impl Event for $ty {
            const DESCRIPTOR: EventDescriptor = descriptor(
                concat!(module_path!(), "::", stringify!($ty)),
                $name,
                Durability::$durability,
                None,
            );
            type Reply = ();
        }
    };
}

/// A durable event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Order {
    pub(crate) n: u32,
}
suite_event!(Order, "conformance.orders.Order", Durable);

/// A durable event that handlers of [`Order`] publish.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct FollowUp {
    pub(crate) n: u32,
}
suite_event!(FollowUp, "conformance.orders.FollowUp", Durable);

/// A durable event with a payload of any size.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Blob {
    pub(crate) blob: String,
}
suite_event!(Blob, "conformance.blobs.Blob", Durable);

/// An ephemeral event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Tick {
    pub(crate) n: u32,
}
suite_event!(Tick, "conformance.live.Tick", Ephemeral);

/// A large ephemeral event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Frame {
    pub(crate) n: u32,
    pub(crate) pixels: String,
}
suite_event!(Frame, "conformance.live.Frame", Ephemeral);

/// An ephemeral event on a templated channel, one per tenant.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Presence {
    pub(crate) tenant: String,
    pub(crate) user: u32,
}

impl Event for Presence {
    const DESCRIPTOR: EventDescriptor = EventDescriptor {
        rust_type: concat!(module_path!(), "::Presence"),
        name: "conformance.Presence",
        channel: "conformance.tenant.{tenant}.presence",
        pattern: "conformance.tenant.*.presence",
        durability: Durability::Ephemeral,
        version: 1,
        max_len: None,
        reply: None,
    };
    type Reply = ();

    fn channel(&self) -> Cow<'static, str> {
        Cow::Owned(format!("conformance.tenant.{}.presence", self.tenant))
    }
}

/// An ephemeral request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct FindUser {
    pub(crate) id: u64,
}
suite_event!(
    FindUser,
    "conformance.users.FindUser",
    Ephemeral,
    reply = UserFound
);

/// The reply to [`FindUser`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct UserFound {
    pub(crate) id: u64,
    pub(crate) name: String,
}

/// A durable request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct RenameUser {
    pub(crate) id: u64,
}
suite_event!(
    RenameUser,
    "conformance.users.RenameUser",
    Durable,
    reply = bool
);
