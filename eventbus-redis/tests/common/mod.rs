//! Test harness: a private `redis-server` per test on a free loopback port, and helpers that wait
//! on conditions instead of sleeping.
#![allow(dead_code, missing_docs)]

pub mod child;
pub mod proxy;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eventbus_core::{Bus, BusBuilder};
use eventbus_redis::RedisTransport;

/// How long a test waits for a condition before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    /// `Some` for a server that only speaks TLS (`--port 0 --tls-port <port>`).
    tls: Option<tls::ServerTls>,
}

impl RedisServer {
    /// Starts a server without persistence on a free loopback port.
    /// Also installs the log subscriber, so a failing test shows the bus's log lines.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra configuration (`["--requirepass", "secret"]`).
    pub fn start_with(args: &[&str]) -> RedisServer {
        Self::start_inner(args, None)
    }

    /// Starts a server that accepts only TLS connections, with the certificates of `tls`
    /// (written to the server's directory), and extra configuration.
    pub fn start_tls(tls: tls::ServerTls, args: &[&str]) -> RedisServer {
        Self::start_inner(args, Some(tls))
    }

    fn start_inner(args: &[&str], tls: Option<tls::ServerTls>) -> RedisServer {
        logs();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("eventbus-redis-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the test server's directory");
        if let Some(tls) = &tls {
            for (file, pem) in [
                ("server.crt", &tls.server.cert_pem),
                ("server.key", &tls.server.key_pem),
                ("ca.crt", &tls.ca_pem),
            ] {
                std::fs::write(dir.join(file), pem).expect("cannot write a TLS file");
            }
        }
        // Another process may take the port between our probe and the server's bind: retry.
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                port,
                dir: dir.clone(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                tls: tls.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 5 attempts");
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (no persistence: every key is gone) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.resume();
    }

    /// Starts the stopped server again on the same port.
    pub fn resume(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process and waits for PING; false when it exited (port taken).
    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.crt"))
                .args([
                    "--tls-auth-clients",
                    if tls.client.is_some() { "yes" } else { "no" },
                ]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server not found: install it (apt-get install -y redis-server)")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(_status)) = child.try_wait() {
                return false;
            }
            let up = match &self.tls {
                None => ping(self.port),
                Some(tls) => tls::ping(self.port, tls),
            };
            if up {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server on port {} did not answer PING within {PATIENCE:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port");
    listener
        .local_addr()
        .expect("bound socket has an address")
        .port()
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // `+PONG`, or `-NOAUTH` from a server with a password: either way it is up.
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
}

/// Polls `cond` every 10 ms until it holds; false after `timeout`.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`] with an async condition.
pub async fn wait_until_async(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    eventually(timeout, async || cond().await.then_some(()))
        .await
        .is_some()
}

/// Polls `f` every 10 ms until it returns `Some`; `None` after `timeout`.
pub async fn eventually<T>(timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A namespace no other test uses.
pub fn namespace(test: &str) -> String {
    format!(
        "t{}-{}-{test}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder on a new Redis transport with fast claims for tests.
pub async fn builder(url: &str, namespace: &str) -> BusBuilder {
    let transport = RedisTransport::connect(url)
        .await
        .expect("connect to the test server");
    Bus::builder()
        .transport(transport)
        .namespace(namespace)
        .configure(|c| c.claim_idle = Duration::from_millis(500))
}

/// A bus on a new Redis transport.
pub async fn bus(url: &str, namespace: &str) -> Bus {
    builder(url, namespace).await.build().expect("valid bus")
}

/// A plain redis connection, as a non-Rust service would have.
pub async fn plain(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("plain connection")
}

/// Installs a log subscriber once (RUST_LOG=eventbus_redis=debug to see it).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A shared list that handlers append to and tests read.
#[derive(Debug)]
pub struct Recorder<T>(std::sync::Arc<std::sync::Mutex<Vec<T>>>);

impl<T> Clone for Recorder<T> {
    fn clone(&self) -> Self {
        Recorder(self.0.clone())
    }
}

impl<T> Default for Recorder<T> {
    fn default() -> Self {
        Recorder(Default::default())
    }
}

impl<T: Clone> Recorder<T> {
    pub fn push(&self, item: T) {
        self.0.lock().unwrap().push(item);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn items(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
}

/// Appends `line` and a newline in one write: child processes of a test report what they
/// handled this way, and a process killed mid-write leaves at most one incomplete last line.
pub fn append_line(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the child opens its file");
    file.write_all(format!("{line}\n").as_bytes())
        .expect("the child writes its file");
}

/// The complete lines of a file written by [`append_line`] (a line without its newline is left
/// out).
pub fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}

/// Appends an id with [`append_line`].
pub fn append_id(path: &Path, id: u32) {
    append_line(path, &id.to_string());
}

/// The ids in a file written by [`append_id`].
pub fn read_ids(path: &Path) -> Vec<u32> {
    read_lines(path)
        .iter()
        .map(|l| l.parse().expect("a number per line"))
        .collect()
}

/// `XGROUP CREATE <stream> <group> 0 MKSTREAM` on a raw connection: a group as another client
/// would make it.
pub async fn create_group(raw: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(raw)
        .await
        .expect("XGROUP CREATE");
}

/// Reads one new entry of `stream` as `consumer` of `group` on a raw connection (it becomes
/// pending on that consumer, as for a process that read it and died); the raw reply.
pub async fn read_one_as(
    raw: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    consumer: &str,
) -> redis::Value {
    redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(raw)
        .await
        .expect("XREADGROUP")
}
