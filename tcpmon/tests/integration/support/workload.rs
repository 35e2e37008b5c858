//! Known TCP workloads and the exact transitions each must produce, from the handshake and
//! teardown model in docs/METRICS.md (checked against the kernel with bpftrace on
//! sock:inet_sock_set_state).
use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
};

/// Label values of one series, in the metric's label order.
pub type Labels = Vec<String>;

fn key(values: &[&str]) -> Labels {
    values.iter().map(|v| v.to_string()).collect()
}

/// What a workload must add to the agent's metrics, series by series.
#[derive(Debug, Default, PartialEq)]
pub struct Expected {
    /// `tcpmon_state_transitions_total` by (family, old_state, new_state).
    pub transitions: BTreeMap<Labels, u64>,
    /// `tcpmon_state_duration_seconds_count` by (state).
    pub dwell: BTreeMap<Labels, u64>,
    /// `tcpmon_handshakes_total` by (side, result, port).
    pub handshakes: BTreeMap<Labels, u64>,
    /// `tcpmon_handshake_duration_seconds_count` by (side, port).
    pub handshake_times: BTreeMap<Labels, u64>,
    /// `tcpmon_teardowns_total` by (initiator, kind, port).
    pub teardowns: BTreeMap<Labels, u64>,
    /// `tcpmon_state_duration_unmeasured_total{reason="untracked"}`: transitions of sockets
    /// the program has no entry for (opened before the agent started, or evicted).
    pub untracked: u64,
}

fn add(map: &mut BTreeMap<Labels, u64>, labels: &[&str], n: u64) {
    *map.entry(key(labels)).or_default() += n;
}

impl Expected {
    pub fn transition(&mut self, family: &str, old: &str, new: &str, n: u64) -> &mut Self {
        add(&mut self.transitions, &[family, old, new], n);
        self
    }

    pub fn dwell(&mut self, state: &str, n: u64) -> &mut Self {
        add(&mut self.dwell, &[state], n);
        self
    }

    /// A listener opened and closed once: CLOSE -> LISTEN -> CLOSE.
    pub fn listener(&mut self, family: &str) -> &mut Self {
        self.transition(family, "CLOSE", "LISTEN", 1)
            .transition(family, "LISTEN", "CLOSE", 1)
            .dwell("LISTEN", 1)
    }

    /// `n` completed three-way handshakes on service port label `port`, both sides.
    pub fn handshakes(&mut self, family: &str, n: u64, port: &str) -> &mut Self {
        add(&mut self.handshakes, &["client", "established", port], n);
        add(&mut self.handshakes, &["server", "established", port], n);
        add(&mut self.handshake_times, &["client", port], n);
        add(&mut self.handshake_times, &["server", port], n);
        self.transition(family, "CLOSE", "SYN_SENT", n)
            .transition(family, "SYN_SENT", "ESTABLISHED", n)
            .transition(family, "LISTEN", "SYN_RECV", n)
            .transition(family, "SYN_RECV", "ESTABLISHED", n)
            .dwell("SYN_SENT", n)
            .dwell("SYN_RECV", n)
    }

    /// `n` four-way teardowns: one side FIN_WAIT1 -> FIN_WAIT2 -> CLOSE (TIME_WAIT), the other
    /// CLOSE_WAIT -> LAST_ACK -> CLOSE. Which side is which does not change the counts: each
    /// connection has one local and one remote initiator.
    pub fn teardowns(&mut self, family: &str, n: u64, port: &str) -> &mut Self {
        add(&mut self.teardowns, &["local", "fin", port], n);
        add(&mut self.teardowns, &["remote", "fin", port], n);
        self.transition(family, "ESTABLISHED", "FIN_WAIT1", n)
            .transition(family, "ESTABLISHED", "CLOSE_WAIT", n)
            .transition(family, "FIN_WAIT1", "FIN_WAIT2", n)
            .transition(family, "CLOSE_WAIT", "LAST_ACK", n)
            .transition(family, "FIN_WAIT2", "CLOSE", n)
            .transition(family, "LAST_ACK", "CLOSE", n)
            .dwell("ESTABLISHED", 2 * n)
            .dwell("FIN_WAIT1", n)
            .dwell("FIN_WAIT2", n)
            .dwell("CLOSE_WAIT", n)
            .dwell("LAST_ACK", n)
    }

    /// `n` connections aborted with RST by one side (local) and received by the other (remote):
    /// both ESTABLISHED -> CLOSE.
    pub fn resets(&mut self, family: &str, n: u64, port: &str) -> &mut Self {
        add(&mut self.teardowns, &["local", "reset", port], n);
        add(&mut self.teardowns, &["remote", "reset", port], n);
        self.transition(family, "ESTABLISHED", "CLOSE", 2 * n)
            .dwell("ESTABLISHED", 2 * n)
    }

    /// `n` connects that ended in SYN_SENT -> CLOSE with handshake result `result`.
    pub fn failed_connects(&mut self, family: &str, n: u64, result: &str, port: &str) -> &mut Self {
        add(&mut self.handshakes, &["client", result, port], n);
        self.transition(family, "CLOSE", "SYN_SENT", n)
            .transition(family, "SYN_SENT", "CLOSE", n)
            .dwell("SYN_SENT", n)
    }
}

pub fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "inet"
    } else {
        "inet6"
    }
}

/// Who ends each connection, and how.
#[derive(Clone, Copy, Debug)]
pub enum Close {
    /// The client closes; the server closes after reading EOF.
    ClientFirst,
    /// The server closes; the client closes after reading EOF.
    ServerFirst,
    /// The client closes with SO_LINGER 0 (RST); the server reads the reset, then closes.
    ClientReset,
}

/// The port test listeners use: a test's namespace is fresh, so it is always free.
pub const SERVICE_PORT: u16 = 8080;

/// Opens a listener on `ip`:`port`, makes `n` connections ended as `close` says, and closes
/// the listener.
pub fn connections(ip: IpAddr, port: u16, n: u64, close: Close) {
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).expect("listen");
    for _ in 0..n {
        connection_to(&listener, close);
    }
}

/// One connection to `listener`, ended as `close` says.
pub fn connection_to(listener: &TcpListener, close: Close) {
    let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    end(client, server, close);
}

/// Ends an established connection as `close` says. The second side closes only once it has
/// read the first side's FIN or RST, so the transitions are always the ones [`Expected`]
/// describes (never a simultaneous close).
pub fn end(client: TcpStream, server: TcpStream, close: Close) {
    match close {
        Close::ClientFirst => {
            drop(client);
            read_until_closed(server);
        }
        Close::ServerFirst => {
            drop(server);
            read_until_closed(client);
        }
        Close::ClientReset => {
            set_linger_zero(&client);
            drop(client);
            read_until_closed(server);
        }
    }
}

/// A port nothing listens on in a test's fresh namespace (finding a free one by binding a
/// listener would itself add LISTEN transitions).
pub const CLOSED_PORT: u16 = 9;

/// `n` connects to a port on `ip` with no listener; each must be refused.
pub fn refused_connects(ip: IpAddr, n: u64) {
    let addr = SocketAddr::new(ip, CLOSED_PORT);
    for _ in 0..n {
        let err = TcpStream::connect(addr).expect_err("nothing listens there");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    }
}

/// Reads until EOF or reset, then closes.
pub fn read_until_closed(mut stream: TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e}"),
        }
    }
}

pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// A listener with backlog 0 whose one queued connection is never accepted: the accept queue
/// is full, so the kernel drops every further SYN and connects to it time out.
pub struct FullListener {
    listener: TcpListener,
    filler: TcpStream,
}

impl FullListener {
    /// Adds one listener and one handshake on `port` to the expectations.
    pub fn open(ip: IpAddr, port: u16) -> FullListener {
        let listener = listen_with_backlog(SocketAddr::new(ip, port), 0);
        let filler = TcpStream::connect(SocketAddr::new(ip, port)).expect("first connect fits");
        FullListener { listener, filler }
    }

    /// Closes the listener (the kernel resets its unaccepted child: a local reset) and waits
    /// for the filler to read that reset (a remote reset).
    pub fn close(self) {
        drop(self.listener);
        read_until_closed(self.filler);
    }
}

/// `n` concurrent connects to `addr`, each of which must time out.
pub fn timed_out_connects(addr: SocketAddr, n: u64) {
    std::thread::scope(|scope| {
        for _ in 0..n {
            scope.spawn(move || {
                let err = TcpStream::connect(addr).expect_err("SYN is dropped");
                assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
            });
        }
    });
}

/// `n` non-blocking connects to `addr`, each closed while still in SYN_SENT.
pub fn aborted_connects(addr: SocketAddr, n: u64) {
    let SocketAddr::V4(v4) = addr else {
        panic!("aborted_connects takes an IPv4 address");
    };
    for _ in 0..n {
        // SAFETY: plain socket calls on a descriptor this function owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            assert!(fd >= 0);
            let sin = sockaddr_in(v4);
            let rc = libc::connect(
                fd,
                (&raw const sin).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            let err = std::io::Error::last_os_error();
            assert!(
                rc < 0 && err.raw_os_error() == Some(libc::EINPROGRESS),
                "{err}"
            );
            libc::close(fd);
        }
    }
}

/// A listening socket with the given accept backlog (std always uses 128).
pub fn listen_with_backlog(addr: SocketAddr, backlog: i32) -> TcpListener {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("listen_with_backlog takes an IPv4 address");
    };
    // SAFETY: plain socket calls; the descriptor is handed to TcpListener, which owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let sin = sockaddr_in(v4);
        let size = size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::bind(fd, (&raw const sin).cast(), size), 0, "bind");
        assert_eq!(libc::listen(fd, backlog), 0, "listen");
        TcpListener::from_raw_fd(fd)
    }
}

fn sockaddr_in(addr: std::net::SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}
