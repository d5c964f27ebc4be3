//! Handlers: async functions that receive typed events.
//!
//! A handler is a plain async fn. Its first argument is the event it handles, taken by value;
//! after it come, in any order, the extractors it needs ([`FromContext`]):
//!
//! * [`Context`]: the message (id, channel, attempt, correlation id, headers) and
//!   [`Context::publish`] for follow-up events;
//! * [`State<T>`](crate::State): a value given to the bus with
//!   [`BusBuilder::state`](crate::BusBuilder::state), such as a database pool.
//!
//! ```
//! use eventbus_core::prelude::*;
//!
//! #[derive(Event, Serialize, Deserialize, Debug, Clone)]
//! pub struct OrderCreated { pub order_id: String }
//!
//! struct Db;
//! impl Db { async fn charge(&self, _order: &str) -> std::io::Result<()> { Ok(()) } }
//!
//! // Registered with every binary that links this code; started by `run_registered_handlers`.
//! #[handler(group = "billing", concurrency = 8, max_deliveries = 5)]
//! async fn charge(ev: OrderCreated, ctx: Context, db: State<Db>) -> Result<(), HandlerError> {
//!     tracing::info!(order = %ev.order_id, attempt = ctx.attempt(), "charging");
//!     db.charge(&ev.order_id).await?;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eventbus_core::Result<()> {
//! // Or without the attribute, explicitly on one bus:
//! let bus = Bus::builder().state(Db).build()?;
//! bus.subscribe(|ev: OrderCreated| async move { println!("{}", ev.order_id) }).await?;
//! bus.subscribe(|ev: OrderCreated, db: State<Db>| async move { db.charge(&ev.order_id).await }).await?;
//! bus.subscribe(charge).await?;
//! # Ok(()) }
//! ```
//!
//! The shapes: `async fn(E)`, `async fn(E, Context)`, `async fn(E, State<S>)`,
//! `async fn(E, Context, State<S>)`, `async fn(E, State<A>, State<B>)`, ... A `#[handler]` fn
//! takes any number of extractors, a function or closure given to
//! [`Bus::subscribe`](crate::Bus::subscribe) up to four.
//!
//! The state a handler needs is part of its signature, so the bus checks it when the handler
//! starts: a bus without the `S` of a `State<S>` argument refuses to start it with
//! [`Error::MissingState`](crate::Error::MissingState), before any event is read.
//!
//! It returns `()` or `Result<(), E>` for any `E: Into<HandlerError>`; a handler of a request
//! event (`#[event(reply = T)]`) returns `Result<T, E>` ([`HandlerReturn`]). An error or a panic
//! is a failed delivery: it is retried with exponential backoff up to `max_deliveries`, then
//! dead-lettered. How it is run is set by [`HandlerOptions`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;

use crate::context::Context;
use crate::error::{DecodeError, HandlerError};
use crate::event::{Event, EventDescriptor};
pub use crate::options::HandlerOptions;
use crate::state::StateRequirement;

/// Why a message was not handled.
#[derive(Debug)]
pub enum HandlerFailure {
    /// The payload does not decode into the event type: dead-lettered at once.
    Undecodable(DecodeError),
    /// The handler returned an error or panicked.
    Failed(HandlerError),
}

/// The boxed future of a type-erased handler call. `Ok(Some(json))` carries a reply.
pub type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<Bytes>, HandlerFailure>> + Send>>;

/// A handler with its event type erased: takes the payload JSON (the envelope's `data`) and the
/// context, parses the payload and calls the typed function.
pub type ErasedHandler = Arc<dyn Fn(Bytes, Context) -> HandlerFuture + Send + Sync>;

/// A handler found through `inventory`: what `#[handler]` submits.
#[derive(Debug)]
pub struct HandlerRegistration {
    /// The function's path (`billing::handlers::charge`).
    pub name: &'static str,
    /// The event it handles.
    pub event: EventDescriptor,
    /// How it runs.
    pub options: HandlerOptions,
    /// The state its `State<T>` arguments need, checked before any registered handler starts.
    pub required_state: fn() -> Vec<StateRequirement>,
    /// Builds the erased handler.
    pub make: fn() -> ErasedHandler,
}

inventory::collect!(HandlerRegistration);

/// Every `#[handler]` linked into this binary, sorted by event channel then name.
pub fn registered_handlers() -> Vec<&'static HandlerRegistration> {
    let mut all: Vec<&'static HandlerRegistration> =
        inventory::iter::<HandlerRegistration>.into_iter().collect();
    all.sort_by(|a, b| (a.event.channel, a.name).cmp(&(b.event.channel, b.name)));
    all
}

/// What a handler of `E` may return: `Result<R, Er>` where `R` is the event's reply type
/// (`E::Reply`: `()` unless the event declares `#[event(reply = T)]`) and `Er` converts into a
/// [`HandlerError`]; or nothing (`()`) when the reply type is `()`.
///
/// `R` only exists so that a wrong reply type is reported as "not a valid return type for a
/// handler of `E`" instead of a type mismatch; leave it at its default.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid return type for a handler of `{E}`",
    label = "expected `Result<{R}, E>` where `E` converts into `HandlerError`",
    note = "a handler returns `Result<R, E>`, where `R` is the event's reply type (`()` unless the event is declared with `#[event(reply = T)]`, and then it may also return nothing) and `E` is any `std::error::Error + Send + Sync`, `String`, `&str` or `HandlerError`"
)]
pub trait HandlerReturn<E: Event, R = <E as Event>::Reply> {
    /// The reply, or the error as a [`HandlerError`].
    fn into_result(self) -> Result<R, HandlerError>;
}

// `do_not_recommend`: a wrong return type gets the message above, not a list of these impls or
// the conversion chain of an error type that does not convert.
#[diagnostic::do_not_recommend]
impl<E: Event<Reply = ()>> HandlerReturn<E, ()> for () {
    fn into_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[diagnostic::do_not_recommend]
impl<E: Event, R, Er: Into<HandlerError>> HandlerReturn<E, R> for Result<R, Er> {
    fn into_result(self) -> Result<R, HandlerError> {
        self.map_err(Into::into)
    }
}

/// The reply as JSON when the message asked for one (a request), `None` otherwise.
fn encode_reply<R: serde::Serialize>(
    result: Result<R, HandlerError>,
    want_reply: bool,
) -> Result<Option<Bytes>, HandlerError> {
    let reply = result?;
    if !want_reply {
        return Ok(None);
    }
    serde_json::to_vec(&reply)
        .map(|v| Some(Bytes::from(v)))
        .map_err(|e| HandlerError::permanent(format!("cannot encode the reply as JSON: {e}")))
}

/// A handler argument after the event: [`Context`] or [`State<T>`](crate::State). The bus
/// takes each from the delivery and the application state, and reads from the signature which
/// state the handler needs (checked when it starts).
///
/// Sealed: `Context` and `State<T>` are the extractors there are.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "expected `Context`, or `State<{Self}>` for a value given with `Bus::builder().state(value)`",
    note = "a handler takes its event first, then any of `ctx: Context` (the message, and `ctx.publish` for follow-ups) and `state: State<T>` (application state)"
)]
pub trait FromContext: Sized + Send + 'static + sealed::Sealed {
    /// Takes the argument from the delivery.
    fn from_context(ctx: &Context) -> Result<Self, HandlerError>;
    /// The state the argument needs, if any.
    fn required_state() -> Option<StateRequirement>;
}

pub(crate) mod sealed {
    /// Keeps [`FromContext`](super::FromContext) to the extractors of this crate.
    pub trait Sealed {}
    impl Sealed for crate::Context {}
    impl<T> Sealed for crate::State<T> {}
}

// `do_not_recommend`: the error above names both extractors; a list of these impls would not
// add to it.
#[diagnostic::do_not_recommend]
impl FromContext for Context {
    fn from_context(ctx: &Context) -> Result<Self, HandlerError> {
        Ok(ctx.clone())
    }

    fn required_state() -> Option<StateRequirement> {
        None
    }
}

/// A function usable as a handler of `E`: `async fn(E, ...) -> R` whose arguments after the
/// event are up to four [`FromContext`] extractors. `Args` only tells the shapes apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler of `{E}`",
    label = "expected an `async fn({E}, ...)` whose further arguments are `Context` or `State<T>`, returning `()` or `Result<_, _>`"
)]
pub trait Handler<E: Event, Args>: Clone + Send + Sync + 'static {
    /// The future the call returns.
    type Future: Future<Output = Result<Option<Bytes>, HandlerError>> + Send + 'static;
    /// Calls the handler; its reply is encoded only when `want_reply`.
    fn call(&self, event: E, ctx: Context, want_reply: bool) -> Self::Future;
    /// The state its `State<T>` arguments need.
    fn required_state() -> Vec<StateRequirement>;
}

/// The future of a [`Handler`] call: the function's future, or the error of an argument that
/// could not be extracted.
#[doc(hidden)]
pub struct Ret<F, E> {
    call: Result<Pin<Box<F>>, Option<HandlerError>>,
    want_reply: bool,
    _e: PhantomData<fn() -> E>,
}

impl<F, E> Ret<F, E> {
    fn failed(error: HandlerError) -> Self {
        Ret {
            call: Err(Some(error)),
            want_reply: false,
            _e: PhantomData,
        }
    }
}

impl<F, E> Future for Ret<F, E>
where
    E: Event,
    F: Future,
    F::Output: HandlerReturn<E>,
{
    type Output = Result<Option<Bytes>, HandlerError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let want = self.want_reply;
        match &mut self.call {
            Ok(fut) => fut
                .as_mut()
                .poll(cx)
                .map(|r| encode_reply(r.into_result(), want)),
            Err(e) => Poll::Ready(Err(e.take().unwrap_or_else(|| {
                HandlerError::permanent("a handler call was polled after it completed")
            }))),
        }
    }
}

macro_rules! handler_with_extractors {
    ($($arg:ident),*) => {
        impl<E, F, Fut, $($arg,)*> Handler<E, (E, $($arg,)*)> for F
        where
            E: Event,
            F: Fn(E, $($arg,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: HandlerReturn<E>,
            $($arg: FromContext,)*
        {
            type Future = Ret<Fut, E>;

            // Each extractor is bound to a variable named like its type parameter.
            #[allow(non_snake_case, unused_variables)]
            fn call(&self, event: E, ctx: Context, want_reply: bool) -> Self::Future {
                $(
                    let $arg = match $arg::from_context(&ctx) {
                        Ok(value) => value,
                        Err(e) => return Ret::failed(e),
                    };
                )*
                Ret {
                    call: Ok(Box::pin(self(event, $($arg,)*))),
                    want_reply,
                    _e: PhantomData,
                }
            }

            #[allow(unused_mut)] // without extractors
            fn required_state() -> Vec<StateRequirement> {
                let mut all = Vec::new();
                $(all.extend($arg::required_state());)*
                all
            }
        }
    };
}

handler_with_extractors!();
handler_with_extractors!(A1);
handler_with_extractors!(A1, A2);
handler_with_extractors!(A1, A2, A3);
handler_with_extractors!(A1, A2, A3, A4);

/// Parses the payload into `E`.
fn decode<E: Event>(data: &Bytes, ctx: &Context) -> Result<E, DecodeError> {
    serde_json::from_slice(data).map_err(|e| DecodeError::new(ctx.channel(), e, data))
}

/// Erases a typed handler: the returned closure parses the payload into `E` and calls it.
pub fn erase<E, H, Args>(handler: H) -> ErasedHandler
where
    E: Event,
    H: Handler<E, Args>,
    Args: 'static,
{
    Arc::new(
        move |data: Bytes, ctx: Context| match decode::<E>(&data, &ctx) {
            Ok(event) => {
                let want_reply = ctx.metadata().reply_to.is_some();
                let fut = handler.call(event, ctx, want_reply);
                Box::pin(async move { fut.await.map_err(HandlerFailure::Failed) }) as HandlerFuture
            }
            Err(e) => Box::pin(std::future::ready(Err(HandlerFailure::Undecodable(e)))),
        },
    )
}

/// The boxed call of a `#[handler]` fn, as the macro builds it: extractors taken, return value
/// converted. Boxing it is where the macro requires it to be `Send`, so that a handler holding
/// something that is not across an `.await` gets the compiler's explanation at its name.
#[doc(hidden)]
pub type ReplyFuture<R> = Pin<Box<dyn Future<Output = Result<R, HandlerError>> + Send>>;

/// [`erase`] for the code of `#[handler]`, whose call is already a [`ReplyFuture`].
#[doc(hidden)]
pub fn erase_call<E, F>(call: F) -> ErasedHandler
where
    E: Event,
    F: Fn(E, Context) -> ReplyFuture<E::Reply> + Send + Sync + 'static,
{
    Arc::new(
        move |data: Bytes, ctx: Context| match decode::<E>(&data, &ctx) {
            Ok(event) => {
                let want_reply = ctx.metadata().reply_to.is_some();
                let fut = call(event, ctx);
                Box::pin(async move {
                    encode_reply(fut.await, want_reply).map_err(HandlerFailure::Failed)
                }) as HandlerFuture
            }
            Err(e) => Box::pin(std::future::ready(Err(HandlerFailure::Undecodable(e)))),
        },
    )
}
