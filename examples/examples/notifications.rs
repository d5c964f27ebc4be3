//! Multi-tenant notification fan-out over pub/sub, with a pattern subscription.
//!
//! ```text
//! cargo run -p eventbus-examples --example notifications
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p eventbus-examples --example notifications
//! ```
//!
//! `Notification` is ephemeral and its channel is a template over its `tenant` field:
//! `notify.acme.user`, `notify.globex.user`... Every live subscriber gets every message (fan-out):
//! the typed `push` handler (subscribed to the pattern `notify.*.user` for the whole type) and an
//! audit log that subscribes with a raw glob pattern to one tenant only. A subscriber that is not
//! running misses the message: use a durable event when that matters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventbus::PatternMessage;
use eventbus::prelude::*;

/// A notification for one user of one tenant.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, channel = "notify.{tenant}.user")]
struct Notification {
    tenant: String,
    user: String,
    text: String,
}

static RECEIVED: AtomicUsize = AtomicUsize::new(0);

#[handler]
async fn push(n: Notification, ctx: Context) {
    println!("[push]  {} <- {:?} via {}", n.user, n.text, ctx.channel());
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

#[tokio::main]
async fn main() -> eventbus::Result<()> {
    let bus = eventbus::builder_from_env()
        .await?
        .namespace("example-notifications")
        .build()?;
    bus.start_registered_handlers().await?;

    // A raw pattern subscription: every channel of tenant acme, whatever the event type.
    let audit_prefix = bus.key("notify.acme.");
    bus.subscribe_pattern("notify.acme.*", move |msg: PatternMessage| {
        let prefix = audit_prefix.clone();
        async move {
            let n: Notification = msg.json()?;
            let local = msg.channel().strip_prefix(&prefix).unwrap_or(msg.channel());
            println!("[audit] acme/{local}: {} was told {:?}", n.user, n.text);
            RECEIVED.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    })
    .await?;

    let messages = [
        ("acme", "ana", "your export is ready"),
        ("globex", "bo", "invoice 42 was paid"),
        ("acme", "carl", "you were mentioned in #ops"),
    ];
    let mut expected = 0;
    for (tenant, user, text) in messages {
        let receipt = bus
            .publish(&Notification {
                tenant: tenant.into(),
                user: user.into(),
                text: text.into(),
            })
            .await?;
        let receivers = receipt.receivers.unwrap_or(0);
        expected += receivers as usize;
        println!(
            "published on {} to {receivers} subscriber(s)",
            receipt.channel
        );
    }

    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while RECEIVED.load(Ordering::SeqCst) < expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if waited.is_err() {
        eprintln!("timed out waiting for the subscribers");
    }
    println!(
        "{} deliveries for {} messages",
        RECEIVED.load(Ordering::SeqCst),
        messages.len()
    );
    bus.shutdown().await;
    Ok(())
}
