//! Two event types on one channel: start-up fails and names both.
#![allow(missing_docs)] // test types

use eventbus_core::prelude::*;

mod billing {
    use eventbus_core::prelude::*;
    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(name = "dup.orders.OrderCreated")]
    pub struct OrderCreated {
        pub id: u32,
    }
}

mod shipping {
    use eventbus_core::prelude::*;
    #[derive(Event, Serialize, Deserialize, Debug, Clone)]
    #[event(name = "dup.orders.OrderCreated")]
    pub struct OrderCreated {
        pub id: u32,
    }
}

#[handler]
async fn on_order(_ev: billing::OrderCreated) {}

#[tokio::test]
async fn two_event_types_on_one_channel_fail_start_up_naming_both() {
    let bus = Bus::memory();
    let err = bus.start_registered_handlers().await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("duplicate_channel::billing::OrderCreated"),
        "{msg}"
    );
    assert!(
        msg.contains("duplicate_channel::shipping::OrderCreated"),
        "{msg}"
    );
    assert!(msg.contains("`dup.orders.OrderCreated`"), "{msg}");
    let _ = shipping::OrderCreated { id: 1 };
}
