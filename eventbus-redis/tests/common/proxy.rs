//! A loopback TCP proxy between the bus and a test server, to break the network on purpose.
//!
//! * [`Proxy::stall`] keeps every connection open but stops forwarding bytes in both directions,
//!   for the current connections and for new ones (they are accepted and connected upstream,
//!   then stay silent): a black hole, as a network partition looks to TCP. What was sent
//!   meanwhile is held, not dropped, and flows again after [`Proxy::resume`], as TCP
//!   retransmissions would deliver it once the network is back.
//! * [`Proxy::resume_new_only`] ends a stall for new connections only: every connection opened
//!   before (during the stall too) stays black-holed until it is closed. A NAT gateway or
//!   firewall that lost its connection table looks like this: the old flows go nowhere, new ones
//!   are set up afresh.
//! * [`Proxy::cut`] closes every current connection on both sides and keeps accepting new ones:
//!   a load balancer or NAT gateway that dropped its connection table. Bytes the proxy had read
//!   but not yet written are lost with the connection.
//!
//! Only loopback addresses: it listens on `127.0.0.1:0` and forwards to `127.0.0.1:<port>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; stops (and closes every connection) on drop.
pub struct Proxy {
    addr: SocketAddr,
    control: Arc<Control>,
    acceptor: JoinHandle<()>,
}

struct Control {
    /// What gets through.
    network: watch::Sender<Network>,
    /// Bumped by every cut: each connection ends when it changes.
    generation: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: AtomicUsize,
}

/// The state of the simulated network.
#[derive(Clone, Copy, Default)]
struct Network {
    /// Nothing gets through on any connection.
    stalled: bool,
    /// Connections numbered below this one are black-holed for good.
    lost_below: usize,
}

impl Network {
    /// True when connection `number` forwards bytes.
    fn passes(&self, number: usize) -> bool {
        !self.stalled && number >= self.lost_below
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the proxy's loopback port");
        let addr = listener.local_addr().expect("bound socket has an address");
        let control = Arc::new(Control {
            network: watch::Sender::new(Network::default()),
            generation: watch::Sender::new(0),
            accepted: AtomicUsize::new(0),
        });
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let acceptor = tokio::spawn(accept(listener, upstream, control.clone()));
        Proxy {
            addr,
            control,
            acceptor,
        }
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.addr.port())
    }

    /// Stops forwarding bytes, both ways, on every connection (current and new).
    pub fn stall(&self) {
        self.control.network.send_modify(|n| n.stalled = true);
    }

    /// Forwards again, starting with what was held during the stall.
    pub fn resume(&self) {
        self.control.network.send_modify(|n| n.stalled = false);
    }

    /// Forwards again on connections opened from now on; every connection opened before stays
    /// black-holed (what it sent is never delivered) until it is cut or closed.
    pub fn resume_new_only(&self) {
        let accepted = self.control.accepted.load(Ordering::SeqCst);
        self.control.network.send_modify(|n| {
            n.stalled = false;
            n.lost_below = accepted;
        });
    }

    /// Closes every current connection; new ones are accepted as before.
    pub fn cut(&self) {
        self.control.generation.send_modify(|g| *g += 1);
    }

    /// How many connections the proxy accepted so far (reconnections show up here).
    pub fn accepted(&self) -> usize {
        self.control.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, control: Arc<Control>) {
    loop {
        let Ok((client, _peer)) = listener.accept().await else {
            continue;
        };
        let number = control.accepted.fetch_add(1, Ordering::SeqCst);
        // Subscribed before the task starts, so a cut right after the accept reaches it.
        let mut cut = control.generation.subscribe();
        cut.mark_unchanged();
        let network = control.network.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = forward(client, upstream, network, number) => {}
                _ = cut.changed() => {}
            }
            // Both sockets are dropped here: the client and the server see the connection close.
        });
    }
}

/// Connects upstream and copies bytes both ways until either side closes.
async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    network: watch::Receiver<Network>,
    number: usize,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // The server is down: the client sees its connection closed.
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, network.clone(), number) => {}
        () = pump(server_read, client_write, network, number) => {}
    }
}

/// Copies `from` to `to` for connection `number`, reading nothing while it does not pass and
/// holding what it read when a stall began until it ends.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut network: watch::Receiver<Network>,
    number: usize,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if network.wait_for(|n| n.passes(number)).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if network.wait_for(|n| n.passes(number)).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
