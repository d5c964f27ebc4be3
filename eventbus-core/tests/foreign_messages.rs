//! Messages from producers that are not eventbus, on the in-memory bus (the same codec and
//! dispatcher as Redis): envelopes of another event type on a handler's channel, replies
//! written by hand, and where dead letters of channel-declared events go.
#![allow(missing_docs)] // test types

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::envelope::{Encoded, Metadata};
use eventbus_core::prelude::*;
use eventbus_core::testing::dead_letters;
use eventbus_core::transport::Outgoing;
use eventbus_core::{Error, PatternMessage};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "shop.orders.OrderCreated")]
pub struct OrderCreated {
    pub order_id: String,
    #[serde(default)]
    pub amount_cents: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "live.Tick")]
pub struct Tick {
    pub n: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, channel = "tenant.{tenant}.presence")]
pub struct Presence {
    pub tenant: String,
    pub user: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "users.FindUser", reply = UserFound)]
pub struct FindUser {
    pub id: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UserFound {
    pub name: String,
}

/// The same declarations in two modules, as before and after a module rename.
mod before_rename {
    use eventbus_core::prelude::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(ephemeral, channel = "live.ticks")]
    pub struct Ticker {
        pub n: u32,
    }

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(ephemeral, channel = "room.{room}.typing")]
    pub struct Typing {
        pub room: String,
    }
}

mod after_rename {
    use eventbus_core::prelude::*;

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(ephemeral, channel = "live.ticks")]
    pub struct Ticker {
        pub n: u32,
    }

    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(ephemeral, channel = "room.{room}.typing")]
    pub struct Typing {
        pub room: String,
    }
}

/// Publishes `data` in an envelope of `event_type`, as another service would.
async fn publish_foreign(
    bus: &Bus,
    channel: &str,
    durability: Durability,
    meta: Metadata,
    data: &[u8],
) {
    bus.transport()
        .publish(Outgoing {
            channel: channel.to_owned(),
            durability,
            max_len: None,
            message: Encoded::from_data(meta, data),
        })
        .await
        .expect("publish");
}

fn typed(id: &str, event_type: &str) -> Metadata {
    Metadata::new(id, "python-checkout", event_type)
}

type Seen<T> = Arc<Mutex<Vec<T>>>;

fn items<T: Clone>(seen: &Seen<T>) -> Vec<T> {
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn an_entry_of_another_type_is_dead_lettered_naming_both_types() {
    let bus = Bus::memory();
    let seen: Seen<String> = Arc::default();
    let s = seen.clone();
    bus.subscribe(move |ev: OrderCreated| {
        let s = s.clone();
        async move { s.lock().unwrap().push(ev.order_id) }
    })
    .await
    .unwrap();
    let stream = bus.channel_of::<OrderCreated>();
    // Its payload would fit `OrderCreated` (`amount_cents` has a default): only the type tells.
    let payload = br#"{"order_id":"r-1"}"#;
    publish_foreign(
        &bus,
        &stream,
        Durability::Durable,
        typed("f-1", "shop.orders.RefundIssued"),
        payload,
    )
    .await;
    publish_foreign(
        &bus,
        &stream,
        Durability::Durable,
        typed("f-2", "shop.orders.OrderCreated"),
        br#"{"order_id":"o-2"}"#,
    )
    .await;
    eventbus_core::testing::settle(&bus).await;

    assert_eq!(items(&seen), vec!["o-2".to_owned()]);
    let dead = dead_letters::<OrderCreated>(&bus).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason,
        "CloudEvents type \"shop.orders.RefundIssued\" does not match the handler's event type \
         \"shop.orders.OrderCreated\""
    );
    assert_eq!(dead[0].deliveries, 1, "a wrong type is not retried");
    let stats = bus.stats();
    assert_eq!(
        (stats.undecodable, stats.dead_lettered, stats.handled),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_pubsub_message_of_another_type_is_counted_as_undecodable() {
    let bus = Bus::memory();
    let seen: Seen<u32> = Arc::default();
    let s = seen.clone();
    bus.subscribe(move |ev: Tick| {
        let s = s.clone();
        async move { s.lock().unwrap().push(ev.n) }
    })
    .await
    .unwrap();
    // A pattern subscription has no event type: it takes every type.
    let raw: Seen<String> = Arc::default();
    let r = raw.clone();
    bus.subscribe_pattern("live.*", move |msg: PatternMessage| {
        let r = r.clone();
        async move {
            r.lock()
                .unwrap()
                .push(msg.context().metadata().event_type().to_owned());
        }
    })
    .await
    .unwrap();
    let channel = bus.channel_of::<Tick>();
    for (id, ty, n) in [("t-1", "live.Tock", 1), ("t-2", "live.Tick", 2)] {
        let data = format!(r#"{{"n":{n}}}"#);
        publish_foreign(
            &bus,
            &channel,
            Durability::Ephemeral,
            typed(id, ty),
            data.as_bytes(),
        )
        .await;
    }
    eventbus_core::testing::settle(&bus).await;

    assert_eq!(items(&seen), vec![2]);
    assert_eq!(bus.stats().undecodable, 1);
    let mut types = items(&raw);
    types.sort();
    assert_eq!(types, ["live.Tick", "live.Tock"]);
    let dead = dead_letters::<Tick>(&bus).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("\"live.Tock\""),
        "{}",
        dead[0].reason
    );
}

#[tokio::test]
async fn events_declared_by_channel_alone_are_not_type_checked() {
    // Their name is the Rust type path: a service declaring the same channel in another module
    // sends another `type`, and must still be heard.
    let bus = Bus::memory();
    let seen: Seen<u32> = Arc::default();
    let s = seen.clone();
    bus.subscribe(move |ev: Presence| {
        let s = s.clone();
        async move { s.lock().unwrap().push(ev.user) }
    })
    .await
    .unwrap();
    publish_foreign(
        &bus,
        "tenant.acme.presence",
        Durability::Ephemeral,
        typed("p-1", "other_service.events.Presence"),
        br#"{"tenant":"acme","user":7}"#,
    )
    .await;
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(items(&seen), vec![7]);
}

#[tokio::test]
async fn dead_letter_keys_come_from_the_channel_not_the_type_path() {
    let bus = Bus::builder().namespace("app").build().unwrap();
    assert_eq!(
        bus.dead_letter_key_of::<before_rename::Ticker>(),
        "app.live.ticks.dlq"
    );
    assert_eq!(
        bus.dead_letter_key_of::<before_rename::Typing>(),
        "app.room.*.typing.dlq"
    );
    // A module rename moves no key.
    assert_eq!(
        bus.dead_letter_key_of::<before_rename::Ticker>(),
        bus.dead_letter_key_of::<after_rename::Ticker>()
    );
    assert_eq!(
        bus.dead_letter_key_of::<before_rename::Typing>(),
        bus.dead_letter_key_of::<after_rename::Typing>()
    );
    assert_eq!(
        bus.channel_of::<before_rename::Ticker>(),
        bus.channel_of::<after_rename::Ticker>()
    );
    // Named events keep their key: the name is the channel.
    assert_eq!(bus.dead_letter_key_of::<Tick>(), "app.live.Tick.dlq");
    assert_eq!(
        bus.dead_letter_key_of::<OrderCreated>(),
        "app.shop.orders.OrderCreated.dlq"
    );

    // And that is where a dead letter of a templated channel lands.
    bus.subscribe(|_: Presence| async {}).await.unwrap();
    publish_foreign(
        &bus,
        "app.tenant.acme.presence",
        Durability::Ephemeral,
        typed("p-2", "x.Presence"),
        br#"{"tenant":"acme"}"#,
    )
    .await;
    eventbus_core::testing::settle(&bus).await;
    assert_eq!(
        bus.dead_letter_key_of::<Presence>(),
        "app.tenant.*.presence.dlq"
    );
    let dead = dead_letters::<Presence>(&bus).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("missing field `user`"),
        "{}",
        dead[0].reason
    );
}

/// Plays a responder written by hand: answers every `FindUser` request on its `replyto`
/// channel with the attributes `answer` picks.
async fn hand_written_responder(
    bus: &Bus,
    answer: impl Fn(&Metadata) -> (Metadata, &'static [u8]) + Send + Sync + 'static,
) {
    let answer = Arc::new(answer);
    let b = bus.clone();
    bus.subscribe_pattern(FindUser::DESCRIPTOR.channel, move |msg: PatternMessage| {
        let (b, answer) = (b.clone(), answer.clone());
        async move {
            let request = msg.context().metadata();
            let to = request
                .reply_to()
                .expect("a request names its reply channel");
            let (meta, data) = answer(request);
            publish_foreign(&b, to, Durability::Ephemeral, meta, data).await;
        }
    })
    .await
    .unwrap();
}

fn reply(id: &str) -> Metadata {
    typed(id, "users.UserFound")
}

#[tokio::test]
async fn a_reply_names_its_request_in_causationid() {
    let bus = Bus::memory();
    hand_written_responder(&bus, |request| {
        let meta = reply("r-1").with_causation_id(request.id());
        (meta, br#"{"name":"ada"}"#)
    })
    .await;
    let found = bus.request(&FindUser { id: 1 }).await.unwrap();
    assert_eq!(found.name, "ada");
}

#[tokio::test]
async fn a_reply_without_causationid_is_matched_by_correlationid() {
    let bus = Bus::memory();
    hand_written_responder(&bus, |request| {
        assert_eq!(
            request.correlation_id(),
            None,
            "a request starts its own conversation"
        );
        let meta = reply("r-2").with_correlation_id(request.id());
        (meta, br#"{"name":"grace"}"#)
    })
    .await;
    let found = bus.request(&FindUser { id: 2 }).await.unwrap();
    assert_eq!(found.name, "grace");
}

#[tokio::test]
async fn an_error_reply_carries_the_message_in_the_error_attribute() {
    let bus = Bus::memory();
    hand_written_responder(&bus, |request| {
        let meta = reply("r-3")
            .with_causation_id(request.id())
            .with_header("error", "no user 3");
        (meta, b"null")
    })
    .await;
    let err = bus.request(&FindUser { id: 3 }).await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "no user 3"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reply_naming_no_waiting_request_is_not_taken() {
    let wrong = |causation: Option<&str>| {
        let meta = match causation {
            Some(id) => reply("r-4").with_causation_id(id),
            None => reply("r-4"),
        };
        (meta, &br#"{"name":"nobody"}"#[..])
    };
    for causation in [None, Some("another-request")] {
        let bus = Bus::memory();
        hand_written_responder(&bus, move |_| wrong(causation)).await;
        let err = bus
            .request_with_timeout(&FindUser { id: 4 }, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{causation:?}: {err}");
    }
}
