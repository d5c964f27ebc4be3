//! Channel templates on ephemeral events: the channel is filled from the fields, the pattern
//! matches every channel of the type. A raw field `r#type` is named `{type}`.
use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "tenant.{tenant}.presence")]
struct UserOnline {
    tenant: String,
    user_id: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "room.{0}.msg.{1}")]
struct Message(u32, String);

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, channel = "t-{type}:{id}")]
struct RawField {
    r#type: String,
    id: u8,
}

fn main() {
    let d = UserOnline::DESCRIPTOR;
    assert_eq!(d.channel, "tenant.{tenant}.presence");
    assert_eq!(d.pattern, "tenant.*.presence");
    assert!(d.is_templated());
    assert_eq!(d.name, format!("{}.UserOnline", module_path!()));
    let ev = UserOnline {
        tenant: "acme".into(),
        user_id: 7,
    };
    assert_eq!(ev.channel(), "tenant.acme.presence");
    assert_eq!(ev.user_id, 7);

    assert_eq!(Message::DESCRIPTOR.pattern, "room.*.msg.*");
    assert_eq!(Message(3, "general".into()).channel(), "room.3.msg.general");

    assert_eq!(RawField::DESCRIPTOR.pattern, "t-*:*");
    assert_eq!(
        RawField {
            r#type: "a".into(),
            id: 1
        }
        .channel(),
        "t-a:1"
    );
}
