//! Application state for handlers: [`State<T>`], what a handler's signature requires, and the
//! check that every handler finds its state before it starts.
//!
//! A service hands its shared values (a database pool, a client, counters) to the bus once,
//! with [`BusBuilder::state`](crate::BusBuilder::state), and a handler names what it needs in
//! its signature:
//!
//! ```
//! use eventbus_core::prelude::*;
//!
//! #[derive(Event, Serialize, Deserialize, Debug, Clone)]
//! pub struct OrderCreated { pub order_id: String }
//!
//! struct Db { name: &'static str }
//!
//! #[handler(group = "billing")]
//! async fn charge(ev: OrderCreated, db: State<Db>) -> Result<(), HandlerError> {
//!     println!("charging {} in {}", ev.order_id, db.name); // `State<Db>` derefs to `Db`
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eventbus_core::Result<()> {
//! let bus = Bus::builder().state(Db { name: "orders" }).build()?;
//! bus.subscribe(charge).await?;
//!
//! // Without the state, the handler does not start: the error names it and the type.
//! let err = Bus::memory().subscribe(charge).await.unwrap_err();
//! assert!(matches!(err, eventbus_core::Error::MissingState { .. }), "{err}");
//! # Ok(()) }
//! ```
//!
//! Because the signature says what the handler needs, the bus checks it when the handler
//! starts ([`Bus::subscribe`](crate::Bus::subscribe), [`Bus::start_registered_handlers`](crate::Bus::start_registered_handlers)),
//! before any event is read: a missing state is a start-up error, never a failed delivery that
//! is retried and dead-lettered. State is looked up by its exact type: a bus given an
//! `Arc<Counters>` has no `Counters`. Give the value itself; `State<T>` shares it through an
//! `Arc` already, and cloning a `State` only clones that `Arc`.

use std::any::TypeId;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::context::Context;
use crate::engine::StateMap;
use crate::error::{Error, HandlerError, Result};
use crate::handler::{FromContext, HandlerRegistration};

/// A handler argument: the application state of type `T` given to
/// [`BusBuilder::state`](crate::BusBuilder::state). Derefs to `T`; cloning it clones an `Arc`.
///
/// A handler that takes `State<T>` does not start on a bus without a `T`: see the
/// [module docs](crate::state). In a test that calls a handler function directly, build one
/// with [`State::new`].
///
/// ```
/// use eventbus_core::prelude::*;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Event, Serialize, Deserialize, Debug, Clone)]
/// pub struct Paid { pub cents: u64 }
///
/// #[derive(Default)]
/// struct Revenue { cents: AtomicU64 }
///
/// async fn book(ev: Paid, revenue: State<Revenue>) {
///     revenue.cents.fetch_add(ev.cents, Ordering::Relaxed);
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let revenue = State::new(Revenue::default());
/// book(Paid { cents: 250 }, revenue.clone()).await;
/// assert_eq!(revenue.cents.load(Ordering::Relaxed), 250);
/// # }
/// ```
pub struct State<T>(Arc<T>);

impl<T> State<T> {
    /// Wraps a value, for calling a handler function directly.
    pub fn new(value: T) -> Self {
        State(Arc::new(value))
    }

    /// Wraps a value that is already shared.
    pub fn from_arc(value: Arc<T>) -> Self {
        State(value)
    }

    /// The shared value, to keep it beyond the handler call.
    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T> Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AsRef<T> for State<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        State(self.0.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&self.0).finish()
    }
}

#[diagnostic::do_not_recommend]
impl<T: Send + Sync + 'static> FromContext for State<T> {
    fn from_context(ctx: &Context) -> Result<Self, HandlerError> {
        // Checked when the handler started; reached without that check only by a handler
        // called directly (`Bus::call_handler`), which then fails with the same explanation.
        lookup::<T>(ctx.engine().state_map()).ok_or_else(|| {
            HandlerError::permanent(missing(
                Some(ctx.handler()),
                std::any::type_name::<T>(),
                None,
            ))
        })
    }

    fn required_state() -> Option<StateRequirement> {
        Some(StateRequirement::of::<T>())
    }
}

/// One state type a handler needs, read from its signature: each `State<T>` argument is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRequirement {
    /// The type `T` of `State<T>`.
    pub type_id: TypeId,
    /// Its name, for errors (`my_service::Db`).
    pub type_name: &'static str,
    /// Types a bus may hold by mistake instead of `T` (`Arc<T>`, `Box<T>`, `State<T>`), to say
    /// so in the error.
    near_misses: [(TypeId, &'static str); 3],
}

impl StateRequirement {
    /// The requirement of a `State<T>` argument.
    pub fn of<T: Send + Sync + 'static>() -> Self {
        StateRequirement {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            near_misses: [
                near_miss::<Arc<T>>(),
                near_miss::<Box<T>>(),
                near_miss::<State<T>>(),
            ],
        }
    }
}

fn near_miss<W: 'static>() -> (TypeId, &'static str) {
    (TypeId::of::<W>(), std::any::type_name::<W>())
}

/// The value of type `T` in `state`, shared.
pub(crate) fn lookup<T: Send + Sync + 'static>(state: &StateMap) -> Option<State<T>> {
    let value = state.get(&TypeId::of::<T>())?.clone();
    value.downcast::<T>().ok().map(State)
}

/// Fails with [`Error::MissingState`] when `given` lacks a type that `handler` requires.
pub(crate) fn check(handler: &str, required: &[StateRequirement], given: &StateMap) -> Result<()> {
    for need in required {
        if given.contains_key(&need.type_id) {
            continue;
        }
        let given_instead = need
            .near_misses
            .iter()
            .find(|(id, _)| given.contains_key(id))
            .map(|(_, name)| *name);
        return Err(Error::MissingState {
            handler: Some(handler.to_owned()),
            type_name: need.type_name,
            given_instead,
        });
    }
    Ok(())
}

/// [`check`] for every registered handler, so that none starts when one lacks its state.
pub(crate) fn check_registered(
    handlers: &[&'static HandlerRegistration],
    given: &StateMap,
) -> Result<()> {
    handlers
        .iter()
        .try_for_each(|h| check(h.name, &(h.required_state)(), given))
}

/// The text of [`Error::MissingState`], shared with the run-time error of a handler called
/// without the start-up check.
pub(crate) fn missing(
    handler: Option<&str>,
    type_name: &str,
    given_instead: Option<&str>,
) -> String {
    let mut text = match handler {
        Some(handler) => format!("handler {handler} takes State<{type_name}>, but "),
        None => String::new(),
    };
    text.push_str(&format!(
        "the bus has no state of type {type_name}: give it with Bus::builder().state(value)"
    ));
    if let Some(other) = given_instead {
        text.push_str(&format!(
            "; it holds {other} instead: give the value itself, State<{type_name}> shares it \
             through an Arc already"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counters;
    struct Db;

    fn given<T: Send + Sync + 'static>(value: T) -> StateMap {
        let mut map = StateMap::new();
        map.insert(TypeId::of::<T>(), Arc::new(value));
        map
    }

    #[test]
    fn a_given_type_satisfies_its_requirement() {
        let map = given(Counters);
        assert!(check("h", &[StateRequirement::of::<Counters>()], &map).is_ok());
        assert!(check("h", &[], &StateMap::new()).is_ok());
        assert!(lookup::<Counters>(&map).is_some());
        assert!(lookup::<Db>(&map).is_none());
    }

    #[test]
    fn a_missing_type_is_named_with_the_handler() {
        let map = given(Counters);
        let need = [
            StateRequirement::of::<Counters>(),
            StateRequirement::of::<Db>(),
        ];
        let err = check("billing::charge", &need, &map).unwrap_err();
        let Error::MissingState {
            handler,
            type_name,
            given_instead,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(handler.as_deref(), Some("billing::charge"));
        assert!(type_name.ends_with("::Db"), "{type_name}");
        assert_eq!(*given_instead, None);
        let text = err.to_string();
        assert!(
            text.contains("billing::charge") && text.contains("Bus::builder().state(value)"),
            "{text}"
        );
    }

    #[test]
    fn a_wrapped_value_is_not_the_type_and_the_error_says_so() {
        for map in [
            given(Arc::new(Counters)),
            given(Box::new(Counters)),
            given(State::new(Counters)),
        ] {
            let err = check("h", &[StateRequirement::of::<Counters>()], &map).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("instead: give the value itself"), "{text}");
        }
    }
}
