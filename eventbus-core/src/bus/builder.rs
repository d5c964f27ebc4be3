//! Building a bus: transport, settings, application state.

use std::any::TypeId;
use std::sync::Arc;

use super::Bus;
use crate::channel::validate_channel;
use crate::config::BusConfig;
use crate::engine::{Engine, StateMap};
use crate::error::{Error, Result};
use crate::memory::MemoryTransport;
use crate::transport::Transport;

/// Builds a [`Bus`]: transport, namespace, state, limits.
///
/// ```
/// use eventbus_core::{Bus, MemoryTransport};
/// struct Db;
/// let shared = MemoryTransport::new();   // two buses on one transport: two service instances
/// let a = Bus::builder().transport(shared.clone()).namespace("test-42").state(Db).build()?;
/// let b = Bus::builder().transport(shared).namespace("test-42").build()?;
/// # let _ = (a, b);
/// # Ok::<(), eventbus_core::Error>(())
/// ```
#[must_use]
pub struct BusBuilder {
    transport: Option<Arc<dyn Transport>>,
    config: BusConfig,
    state: StateMap,
}

impl BusBuilder {
    /// The transport (default: a new [`MemoryTransport`]).
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// The transport, already shared.
    pub fn transport_arc(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Prefix of every channel and stream key.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = Some(namespace.into());
        self
    }

    /// The CloudEvents `source` of published events.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.config.source = source.into();
        self
    }

    /// A stable instance name (consumer name and reply channel).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.config.instance = instance.into();
        self
    }

    /// Application state, taken by handlers as a [`State<T>`](crate::State) argument. One value
    /// per type, looked up by its exact type: give `T` itself, not an `Arc<T>`.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// Replaces every setting at once.
    pub fn config(mut self, config: BusConfig) -> Self {
        self.config = config;
        self
    }

    /// Changes settings in place: `.configure(|c| c.request_timeout = Duration::from_secs(1))`.
    pub fn configure(mut self, f: impl FnOnce(&mut BusConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Builds the bus. Fails on an invalid namespace or instance name.
    pub fn build(self) -> Result<Bus> {
        let config = self.config;
        if let Some(ns) = &config.namespace {
            validate_channel(ns).map_err(|source| Error::Channel {
                event: "the bus namespace",
                source,
            })?;
        }
        validate_channel(&config.instance).map_err(|source| Error::Channel {
            event: "the bus instance name",
            source,
        })?;
        let memory = self.transport.is_none();
        let transport = self
            .transport
            .unwrap_or_else(|| Arc::new(MemoryTransport::new()));
        let record = config
            .record
            .unwrap_or(memory || transport.name() == "memory");
        Ok(Bus {
            engine: Arc::new(Engine::new(transport, config, self.state, record)),
        })
    }
}

impl Bus {
    /// A builder with default settings and the memory transport.
    pub fn builder() -> BusBuilder {
        BusBuilder {
            transport: None,
            config: BusConfig::default(),
            state: StateMap::new(),
        }
    }
}
