//! `rediss://`: events over TLS with a private CA, certificate verification failures, mutual
//! TLS, and passwords that never show.

mod common;

use std::time::{Duration, Instant};

use common::tls::{ServerTls, TestCa};
use common::{PATIENCE, Recorder, RedisServer, namespace, wait_until};
use eventbus_core::prelude::*;
use eventbus_redis::{RedisOptions, RedisTransport};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "tls.Payment")]
struct Payment {
    id: u32,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(ephemeral, name = "tls.Ping")]
struct Ping {
    n: u32,
}

/// A verification failure is reported by the handshake itself: well within this.
const FAST: Duration = Duration::from_secs(2);

fn trusting(ca: &TestCa) -> RedisOptions {
    RedisOptions::default().tls_root_certificate(ca.cert_pem())
}

/// Connects and expects a failure within [`FAST`]; returns its message.
async fn connect_error(url: &str, options: RedisOptions) -> String {
    let started = Instant::now();
    let result = RedisTransport::connect_with(url, options).await;
    let elapsed = started.elapsed();
    let error = result.expect_err("the connection should have been refused");
    assert!(elapsed < FAST, "failing took {elapsed:?}: {error}");
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_and_ephemeral_events_round_trip_over_tls() {
    let ca = TestCa::new("eventbus test CA");
    let server = RedisServer::start_tls(ServerTls::new(&ca), &[]);
    assert!(server.url().starts_with("rediss://"));
    let ns = namespace("tls");
    let bus_on = async |ns: &str| {
        let transport = RedisTransport::connect_with(&server.url(), trusting(&ca))
            .await
            .expect("connect over TLS with the private CA");
        assert_eq!(
            transport.server(),
            format!("rediss://127.0.0.1:{}/0", server.port())
        );
        Bus::builder()
            .transport(transport)
            .namespace(ns)
            .build()
            .unwrap()
    };
    let consumer = bus_on(&ns).await;
    let payments: Recorder<u32> = Recorder::default();
    let pings: Recorder<u32> = Recorder::default();
    let p = payments.clone();
    // A durable handler reads on its own connection, an ephemeral one on the pub/sub connection.
    consumer
        .subscribe_with(
            move |e: Payment| {
                p.push(e.id);
                std::future::ready(())
            },
            HandlerOptions::new().group("ledger"),
        )
        .await
        .unwrap();
    let p = pings.clone();
    consumer
        .subscribe(move |e: Ping| {
            p.push(e.n);
            std::future::ready(())
        })
        .await
        .unwrap();

    let publisher = bus_on(&ns).await;
    let receipt = publisher.publish(&Payment { id: 7 }).await.unwrap();
    assert!(receipt.stream_id.is_some());
    let receipt = publisher.publish(&Ping { n: 1 }).await.unwrap();
    assert_eq!(receipt.receivers, Some(1));

    assert!(wait_until(PATIENCE, || payments.len() == 1 && pings.len() == 1).await);
    assert_eq!(payments.items(), vec![7]);
    assert_eq!(pings.items(), vec![1]);
    publisher.shutdown().await;
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_untrusted_ca_fails_connect_fast() {
    let ca = TestCa::new("eventbus test CA");
    let server = RedisServer::start_tls(ServerTls::new(&ca), &["--requirepass", "hunter2"]);
    let url = format!("rediss://:hunter2@127.0.0.1:{}", server.port());
    let redacted = format!("rediss://:***@127.0.0.1:{}/0", server.port());

    // The system's roots do not know the private CA, and neither does another private CA.
    let other = TestCa::new("someone else's CA");
    for options in [RedisOptions::default(), trusting(&other)] {
        let msg = connect_error(&url, options).await;
        assert!(msg.contains(&redacted), "{msg}");
        assert!(msg.contains("TLS certificate was not trusted"), "{msg}");
        assert!(msg.contains("not signed by a trusted CA"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_host_fails_connect_fast() {
    let ca = TestCa::new("eventbus test CA");
    // Signed by the trusted CA, but for another name than 127.0.0.1.
    let server = RedisServer::start_tls(ServerTls::for_names(&ca, &["redis.example.com"]), &[]);

    let msg = connect_error(&server.url(), trusting(&ca)).await;
    assert!(msg.contains(&server.url()), "{msg}");
    assert!(msg.contains("TLS certificate was not trusted"), "{msg}");
    assert!(msg.contains("not issued for the host name"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_of_a_rediss_url_never_shows() {
    let ca = TestCa::new("eventbus test CA");
    let server = RedisServer::start_tls(ServerTls::new(&ca), &["--requirepass", "hunter2"]);
    let redacted = format!("rediss://:***@127.0.0.1:{}/0", server.port());

    let url = format!("rediss://:hunter2@127.0.0.1:{}", server.port());
    let transport = RedisTransport::connect_with(&url, trusting(&ca))
        .await
        .expect("connect with the password");
    assert_eq!(transport.server(), redacted);
    let debug = format!("{transport:?}");
    assert!(
        debug.contains(&redacted) && !debug.contains("hunter2"),
        "{debug}"
    );

    let wrong = format!("rediss://:wrong-hunter3@127.0.0.1:{}", server.port());
    let msg = connect_error(&wrong, trusting(&ca)).await;
    assert!(!msg.contains("hunter3"), "{msg}");
    assert!(msg.contains("rediss://:***@127.0.0.1"), "{msg}");

    let options = trusting(&ca).tls_client_identity("cert", "KEY-hunter2");
    let debug = format!("{options:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_the_server_trusts() {
    let ca = TestCa::new("eventbus test CA");
    let client = ca.client("eventbus-test-client");
    let tls = ServerTls {
        client: Some(client.clone()),
        ..ServerTls::new(&ca)
    };
    let server = RedisServer::start_tls(tls, &[]);

    let with_identity = trusting(&ca).tls_client_identity(client.cert_pem, client.key_pem);
    let transport = RedisTransport::connect_with(&server.url(), with_identity)
        .await
        .expect("connect with a client certificate");
    let bus = Bus::builder()
        .transport(transport)
        .namespace(namespace("mtls"))
        .build()
        .unwrap();
    bus.publish(&Ping { n: 1 }).await.unwrap();

    let msg = connect_error(&server.url(), trusting(&ca)).await;
    assert!(msg.contains(&server.url()), "{msg}");
    assert!(msg.contains("requires a client certificate"), "{msg}");

    // A client certificate of another CA is refused too.
    let stranger = TestCa::new("someone else's CA").client("eventbus-test-client");
    let options = trusting(&ca).tls_client_identity(stranger.cert_pem, stranger.key_pem);
    let msg = connect_error(&server.url(), options).await;
    assert!(msg.contains("refused the TLS handshake"), "{msg}");
    assert!(msg.contains("client certificate"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_plain_port_fails_within_the_connection_timeout() {
    let server = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let options = RedisOptions::default().connection_timeout(Duration::from_millis(300));
    // A plain server usually waits for the end of a line that the TLS hello never sends (the
    // connection timeout ends it); if the hello happens to hold one, it answers with an error
    // that is no TLS record. Either way the error says TLS.
    let msg = connect_error(&url, options).await;
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains("TLS"), "{msg}");
}
