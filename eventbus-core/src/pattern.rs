//! Raw pattern subscriptions: every pub/sub channel matching a Redis glob, whatever its type.

use bytes::Bytes;

use crate::context::Context;
use crate::error::{DecodeError, HandlerError};

/// A message received by a pattern subscription ([`Bus::subscribe_pattern`](crate::Bus::subscribe_pattern)):
/// its concrete channel, attributes and raw payload, parsed with [`PatternMessage::json`].
#[derive(Clone, Debug)]
pub struct PatternMessage {
    ctx: Context,
    data: Bytes,
}

impl PatternMessage {
    pub(crate) fn new(ctx: Context, data: Bytes) -> Self {
        PatternMessage { ctx, data }
    }

    /// The concrete channel the message was published on.
    pub fn channel(&self) -> &str {
        self.ctx.channel()
    }

    /// The handler context: attributes, `publish`, `request`.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The payload JSON as received.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Parses the payload.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(&self.data)
            .map_err(|e| DecodeError::new(self.ctx.channel(), e, &self.data))
    }
}

/// What a pattern handler may return: `()` or `Result<(), E>` with `E: Into<HandlerError>`,
/// as for typed handlers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a pattern handler",
    label = "a pattern handler returns `()` or `Result<(), E>` where `E: Into<HandlerError>`"
)]
pub trait PatternReturn {
    /// The outcome of the call.
    fn into_outcome(self) -> Result<(), HandlerError>;
}

impl PatternReturn for () {
    fn into_outcome(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> PatternReturn for Result<(), E> {
    fn into_outcome(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}
