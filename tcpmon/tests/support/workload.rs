//! Known TCP workloads and the exact transitions each must produce, from the model in
//! shared/DESIGN.md (checked against the kernel with bpftrace on sock:inet_sock_set_state).
use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
};

/// What a workload must add to the agent's metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Expected {
    pub transitions: BTreeMap<(String, String, String), u64>,
    pub dwell: BTreeMap<String, u64>,
}

impl Expected {
    pub fn transition(&mut self, family: &str, old: &str, new: &str, n: u64) -> &mut Self {
        *self
            .transitions
            .entry((family.into(), old.into(), new.into()))
            .or_default() += n;
        self
    }

    pub fn dwell(&mut self, state: &str, n: u64) -> &mut Self {
        *self.dwell.entry(state.into()).or_default() += n;
        self
    }

    /// A listener opened and closed once: CLOSE -> LISTEN -> CLOSE.
    pub fn listener(&mut self, family: &str) -> &mut Self {
        self.transition(family, "CLOSE", "LISTEN", 1)
            .transition(family, "LISTEN", "CLOSE", 1)
            .dwell("LISTEN", 1)
    }

    /// `n` completed three-way handshakes, both sides.
    pub fn handshakes(&mut self, family: &str, n: u64) -> &mut Self {
        self.transition(family, "CLOSE", "SYN_SENT", n)
            .transition(family, "SYN_SENT", "ESTABLISHED", n)
            .transition(family, "LISTEN", "SYN_RECV", n)
            .transition(family, "SYN_RECV", "ESTABLISHED", n)
            .dwell("SYN_SENT", n)
            .dwell("SYN_RECV", n)
    }

    /// `n` four-way teardowns: one side FIN_WAIT1 -> FIN_WAIT2 -> CLOSE (TIME_WAIT), the other
    /// CLOSE_WAIT -> LAST_ACK -> CLOSE. Which side is which does not change the counts.
    pub fn teardowns(&mut self, family: &str, n: u64) -> &mut Self {
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

    /// `n` connections aborted with RST by one side: both sides ESTABLISHED -> CLOSE.
    pub fn resets(&mut self, family: &str, n: u64) -> &mut Self {
        self.transition(family, "ESTABLISHED", "CLOSE", 2 * n)
            .dwell("ESTABLISHED", 2 * n)
    }

    /// `n` connects answered with RST: SYN_SENT -> CLOSE.
    pub fn refused(&mut self, family: &str, n: u64) -> &mut Self {
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

/// Opens a listener on `ip` (ephemeral port), makes `n` connections ended as `close` says,
/// and closes the listener.
pub fn connections(ip: IpAddr, n: u64, close: Close) {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("listen");
    let addr = listener.local_addr().expect("listener address");
    for _ in 0..n {
        let client = TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
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
fn read_until_closed(mut stream: TcpStream) {
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

fn set_linger_zero(stream: &TcpStream) {
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
