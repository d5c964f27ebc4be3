//! Durable events over Redis Streams, beyond the rules of the conformance suite
//! (`conformance.rs`): `MAXLEN ~` trimming, which Redis does by whole nodes.

mod common;

use common::{RedisServer, namespace};
use eventbus_core::prelude::*;
use eventbus_redis::RedisTransport;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "metrics.Sample", max_len = 100)]
struct Sample {
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_len_keeps_the_stream_near_its_bound() {
    let server = RedisServer::start();
    let ns = namespace("max-len");
    let transport = RedisTransport::connect(&server.url()).await.unwrap();
    let b = Bus::builder()
        .transport(transport.clone())
        .namespace(&ns)
        .build()
        .unwrap();
    for chunk in 0..10 {
        let samples: Vec<Sample> = (0..100).map(|i| Sample { n: chunk * 100 + i }).collect();
        b.publish_all(&samples).await.unwrap();
    }
    let len = transport
        .stream_len(&b.channel_of::<Sample>())
        .await
        .unwrap();
    // `MAXLEN ~` trims whole nodes of 100 entries: between N and about 2N remain.
    assert!((100..=200).contains(&len), "XLEN is {len}");
}
