//! Connections kept open on purpose: opened before the agent starts (the program never sees
//! them begin), more at once than the per-socket map holds (it must evict), or held in
//! CLOSE_WAIT the way a leaking application holds them.
//!
//! They are made and closed so that no state changes in a timer softirq. The kernel skips the
//! program when a softirq runs nested in a run of it on the same CPU (an interrupt lands while
//! the program runs for a connect() or close() in process context, and the softirq runs on the
//! interrupt's exit), and those transitions are in no counter. A FIN is ACKed from the peer's
//! delayed-ACK timer unless the peer closes first: closing 3,000 held sockets at once left
//! thousands of such timers, and even one connection at a time does when the thread is
//! preempted between its two closes for longer than the timeout (1 to 4 ms on a connection
//! that carried no data, about 40 ms on one that exchanged a request and a reply: the kernel
//! then expects the application to answer). So every connection here exchanges a byte each
//! way first, and is closed completely (the second FIN carries the ACK of the first and
//! cancels the timer) before the next, in chunks with a pause between.
use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use super::workload::{end, read_until_closed, Close, Expected};

/// Pairs closed between two pauses.
const CHUNK: usize = 50;
/// The pause: long enough for the softirqs the chunk raised to run on their own.
const PAUSE: Duration = Duration::from_millis(2);

/// A listener and `n` established connections to it (both ends), all open.
pub struct Held {
    listener: TcpListener,
    pairs: Vec<(TcpStream, TcpStream)>,
}

impl Held {
    /// Opens a listener on `ip`:`port` and `n` connections, one at a time (connect, then
    /// accept): the accept queue never fills, so no SYN is dropped and no SYN-ACK resent.
    pub fn open(ip: IpAddr, port: u16, n: u64) -> Held {
        let listener = TcpListener::bind(SocketAddr::new(ip, port)).expect("listen");
        let pairs = (0..n)
            .map(|_| {
                let client = TcpStream::connect(SocketAddr::new(ip, port)).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                request_reply(&client, &server);
                (client, server)
            })
            .collect();
        Held { listener, pairs }
    }

    /// Closes every connection, half of them client first and half server first, in chunks
    /// with a pause between; then the listener.
    pub fn close_gradually(self) {
        let mut pairs = self.pairs.into_iter().enumerate().peekable();
        while pairs.peek().is_some() {
            for (i, (client, server)) in pairs.by_ref().take(CHUNK) {
                let close = if i % 2 == 0 {
                    Close::ClientFirst
                } else {
                    Close::ServerFirst
                };
                end(client, server, close);
            }
            std::thread::sleep(PAUSE);
        }
        drop(self.listener);
    }

    /// What [`Held::open`] then [`Held::close_gradually`] add, seen from the start.
    pub fn expect(e: &mut Expected, family: &str, port: u16, n: u64) {
        let port = port.to_string();
        e.listener(family)
            .handshakes(family, n, &port)
            .teardowns(family, n, &port);
    }

    /// What [`Held::close_gradually`] adds for connections opened before the agent started:
    /// the teardowns and the listener's LISTEN -> CLOSE, but no handshake.
    pub fn expect_close(e: &mut Expected, family: &str, port: u16, n: u64) {
        e.transition(family, "LISTEN", "CLOSE", 1)
            .teardowns(family, n, &port.to_string());
    }
}

/// A byte from `client` to `server` and one back: afterwards a FIN's ACK waits for the
/// 40 ms delayed-ACK timeout instead of a few milliseconds (see the module documentation).
pub fn request_reply(client: &TcpStream, server: &TcpStream) {
    let mut byte = [0u8; 1];
    let (mut client, mut server) = (client, server);
    client.write_all(b"?").expect("request");
    server.read_exact(&mut byte).expect("read the request");
    server.write_all(b"!").expect("reply");
    client.read_exact(&mut byte).expect("read the reply");
}

/// One connection to `listener` with a [`request_reply`], ended as `close` says.
pub fn connection_with_reply(listener: &TcpListener, close: Close) {
    let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    request_reply(&client, &server);
    end(client, server, close);
}

/// Connections whose server side is in CLOSE_WAIT until [`CloseWait::close`]: an application
/// that does not close the sockets its peers closed. Transitions as [`Held::expect`] says.
///
/// The client shuts down its sending side (FIN) instead of closing, and the server answers
/// with one byte. That byte carries the ACK of the FIN, so the client reaches FIN_WAIT2 now,
/// in this thread, not up to 40 ms later from the server's delayed-ACK timer (a timer
/// softirq: see the module documentation). When the server closes, the client's
/// FIN_WAIT2 -> CLOSE (TIME_WAIT) and the server's LAST_ACK -> CLOSE happen while the server's
/// close() sends its FIN.
pub struct CloseWait(Held);

impl CloseWait {
    pub fn open(ip: IpAddr, port: u16, n: u64) -> CloseWait {
        let held = Held::open(ip, port, n);
        let mut byte = [0u8; 1];
        for (client, server) in &held.pairs {
            client.shutdown(Shutdown::Write).expect("shutdown");
            let mut server = server;
            assert_eq!(server.read(&mut byte).expect("read the FIN"), 0, "EOF");
            server.write_all(b"x").expect("write in CLOSE_WAIT");
            let mut client = client;
            client.read_exact(&mut byte).expect("read the byte");
        }
        CloseWait(held)
    }

    /// Closes the server sides, one at a time, then the listener.
    pub fn close(self) {
        for (client, server) in self.0.pairs {
            drop(server);
            // EOF: the server's FIN arrived and the client's socket is in CLOSE (TIME_WAIT
            // lives on in a mini-socket); its close() changes no state.
            read_until_closed(client);
        }
        drop(self.0.listener);
    }
}
