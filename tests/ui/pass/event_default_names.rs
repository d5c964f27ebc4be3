//! Default names: the module path with `::` turned into `.`, then the type name; every struct
//! and enum shape works.
use eventbus_core::prelude::*;

mod a {
    pub mod b {
        use eventbus_core::prelude::*;

        #[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
        pub struct OrderCreated {
            pub order_id: String,
            pub amount_cents: u64,
        }

        /// The module path as a channel prefix, computed independently of the macro.
        pub fn prefix() -> String {
            module_path!().replace("::", ".")
        }
    }
}

#[derive(Event, Serialize, Deserialize)]
struct Tuple(String, u32);

#[derive(Event, Serialize, Deserialize)]
struct Unit;

#[derive(Event, Serialize, Deserialize)]
enum Shipment {
    Sent { tracking: String },
    Lost,
}

#[allow(non_camel_case_types)]
#[derive(Event, Serialize, Deserialize)]
struct r#type;

fn main() {
    let d = <a::b::OrderCreated as Event>::DESCRIPTOR;
    let channel = format!("{}.OrderCreated", a::b::prefix());
    assert!(channel.ends_with(".a.b.OrderCreated"), "{channel}");
    assert_eq!(d.name, channel);
    assert_eq!(d.channel, channel);
    assert_eq!(d.pattern, channel);
    assert_eq!(a::b::OrderCreated::CHANNEL, channel);
    assert_eq!(
        d.rust_type,
        format!("{}::a::b::OrderCreated", module_path!())
    );
    assert_eq!(d.durability, Durability::Durable);
    assert_eq!(d.version, 1);
    assert_eq!(d.max_len, None);
    assert_eq!(d.reply, None);
    assert!(!d.is_templated());

    let root = module_path!();
    assert_eq!(Tuple::CHANNEL, format!("{root}.Tuple"));
    assert_eq!(Unit::CHANNEL, format!("{root}.Unit"));
    assert_eq!(Shipment::CHANNEL, format!("{root}.Shipment"));
    assert_eq!(r#type::CHANNEL, format!("{root}.type"));
    assert_eq!(Unit.channel(), Unit::CHANNEL);
    let _ = (
        Tuple("x".into(), 1),
        Shipment::Lost,
        Shipment::Sent {
            tracking: String::new(),
        },
    );

    // Every derived type is registered, so the topology snapshot sees it.
    let all = eventbus_core::event::registered_events();
    assert!(all.iter().any(|e| e.channel == channel));
    assert!(all.iter().any(|e| e.channel == Shipment::CHANNEL));
}
