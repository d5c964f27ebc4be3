//! The conformance suite on the Redis transport: every rule, one test each, on a private
//! `redis-server` of its own (started in a few milliseconds; rules also share one server
//! safely, each in a namespace of its own).

mod common;

use async_trait::async_trait;
use common::RedisServer;
use eventbus_core::conformance::Backend;
use eventbus_core::inspect::GroupInfo;
use eventbus_core::{Bus, BusBuilder, Error, Result};
use eventbus_redis::RedisTransport;

/// A `redis-server` and a transport for what the rules do besides a bus.
struct RedisBackend {
    server: RedisServer,
    admin: RedisTransport,
    raw: redis::aio::MultiplexedConnection,
}

impl RedisBackend {
    async fn start() -> RedisBackend {
        let server = RedisServer::start();
        let admin = RedisTransport::connect(&server.url())
            .await
            .expect("connect to the test server");
        let raw = common::plain(&server.url()).await;
        RedisBackend { server, admin, raw }
    }
}

fn failed(what: &str, e: redis::RedisError) -> Error {
    let source: eventbus_core::BoxError = Box::new(e);
    Error::transport("redis", what.to_owned(), Some(source))
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &str {
        "redis"
    }

    async fn bus(&self, builder: BusBuilder) -> Result<Bus> {
        let transport = RedisTransport::connect(&self.server.url()).await?;
        builder.transport(transport).build()
    }

    async fn add_entry(&self, stream: &str, fields: &[(&str, &[u8])]) -> Result<String> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut self.raw.clone())
            .await
            .map_err(|e| failed("XADD", e))
    }

    async fn publish_raw(&self, channel: &str, payload: &[u8]) -> Result<u64> {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.raw.clone())
            .await
            .map_err(|e| failed("PUBLISH", e))
    }

    async fn groups(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        self.admin.groups(stream).await
    }
}

eventbus_core::conformance_tests!(RedisBackend::start().await);
