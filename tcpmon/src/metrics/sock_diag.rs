//! Counting the TCP sockets of the current network namespace with NETLINK_SOCK_DIAG, as `ss`
//! does. The tracepoint never sees TIME_WAIT (a separate mini-socket), so socket counts per
//! state come from here, and so do the listening ports that get their own `port` label.
use std::{
    collections::BTreeSet,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tcpmon_common::tcp_state;

const NETLINK_SOCK_DIAG: i32 = 4;
/// The original inet_diag request type for TCP (`<linux/inet_diag.h>`).
const TCPDIAG_GETSOCK: u16 = 18;
/// `nlmsghdr` + `struct inet_diag_req`.
const REQUEST_LEN: usize = NLMSG_HEADER + 60;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HEADER: usize = 16;
/// The kernel's states, as `idiag_state` carries them (a byte).
const FIN_WAIT2: u8 = tcp_state::FIN_WAIT2 as u8;
const TIME_WAIT: u8 = tcp_state::TIME_WAIT as u8;
const LISTEN: u8 = tcp_state::LISTEN as u8;
/// `idiag_timer` of a time-wait mini-socket.
const TIMER_TIME_WAIT: u8 = 3;
/// Entries of [`SocketCounts::by_state`], indexed by raw kernel state.
pub const STATE_SLOTS: usize = tcp_state::SLOTS as usize;

/// Sockets per raw kernel state, and the ports of listening sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketCounts {
    pub by_state: [u64; STATE_SLOTS],
    pub listening_ports: BTreeSet<u16>,
    /// Time-wait mini-sockets still in their FIN_WAIT2 substate (counted in FIN_WAIT2).
    pub fin_wait2_mini: u64,
}

impl SocketCounts {
    pub fn add(&mut self, other: &SocketCounts) {
        for (total, n) in self.by_state.iter_mut().zip(other.by_state) {
            *total += n;
        }
        self.listening_ports.extend(&other.listening_ports);
        self.fin_wait2_mini += other.fin_wait2_mini;
    }
}

/// Counts the IPv4 and IPv6 TCP sockets of the calling thread's network namespace.
///
/// TIME_WAIT sockets are not dumped, only counted: a busy host holds tens of thousands, and
/// formatting one netlink message each made a scrape take 15 ms. The namespace's time-wait
/// count (`/proc/net/sockstat`, "tw") covers every mini-socket; those still in the FIN_WAIT2
/// substate are dumped (as `ss` shows them, in FIN_WAIT2) and taken out of it.
pub fn count_tcp_sockets(socket: &OwnedFd) -> io::Result<SocketCounts> {
    let mut counts = SocketCounts::default();
    dump(socket, &counting_request(), |payload| {
        count_socket(payload, &mut counts)
    })?;
    let sockstat = std::fs::read_to_string("/proc/thread-self/net/sockstat")?;
    let mini_sockets = time_wait_count(&sockstat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no TCP tw count in sockstat"))?;
    counts.by_state[usize::from(TIME_WAIT)] = mini_sockets.saturating_sub(counts.fin_wait2_mini);
    Ok(counts)
}

/// Counts one socket of the dump.
pub fn count_socket(payload: &[u8], counts: &mut SocketCounts) -> io::Result<()> {
    // inet_diag_msg: family, state, timer, retrans, then the socket id whose first field is
    // the source port in network byte order.
    let head = payload.get(0..6).ok_or_else(truncated)?;
    let (state, timer) = (head[1], head[2]);
    if let Some(slot) = counts.by_state.get_mut(usize::from(state)) {
        *slot += 1;
    }
    if state == FIN_WAIT2 && timer == TIMER_TIME_WAIT {
        counts.fin_wait2_mini += 1;
    }
    if state == LISTEN {
        counts
            .listening_ports
            .insert(u16::from_be_bytes([head[4], head[5]]));
    }
    Ok(())
}

pub fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message")
}

/// The "tw" field of the "TCP:" line of `/proc/net/sockstat`.
pub fn time_wait_count(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "tw" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// `struct nlmsghdr` (`<linux/netlink.h>`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid` (`<linux/inet_diag.h>`): which sockets; all zero matches any.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// The original `struct inet_diag_req`, after its `nlmsghdr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagRequest {
    header: NlMsgHdr,
    family: u8,
    src_len: u8,
    dst_len: u8,
    ext: u8,
    id: InetDiagSockId,
    /// A bit per TCP state to dump.
    states: u32,
    dbs: u32,
}
const _: () = assert!(size_of::<InetDiagRequest>() == REQUEST_LEN);

/// The request: the original `struct inet_diag_req` as `TCPDIAG_GETSOCK`, for the TCP sockets
/// in `states` (a bit per state) with the `ext` attributes.
///
/// Not `SOCK_DIAG_BY_FAMILY` with an `inet_diag_req_v2`, which names one address family: every
/// dump walks the whole established hash of the host (all namespaces and both families share
/// it, time-wait entries included), and the original request dumps both families in a single
/// walk (the kernel reads it as family `AF_UNSPEC`). After a connection storm that left 100,000
/// time-wait entries, that walk is most of a scrape. (A dump of LISTEN sockets alone walks
/// only the listening hash.)
fn request(states: u32, ext: u8) -> InetDiagRequest {
    InetDiagRequest {
        header: NlMsgHdr {
            len: REQUEST_LEN as u32,
            kind: TCPDIAG_GETSOCK,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            ..NlMsgHdr::default()
        },
        ext,
        states,
        ..InetDiagRequest::default()
    }
}

/// Every state but TIME_WAIT.
fn counting_request() -> InetDiagRequest {
    request(!(1 << TIME_WAIT), 0)
}

/// A NETLINK_SOCK_DIAG socket of the calling thread's network namespace.
pub fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor just opened and owned by nothing else; closed on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `msg` on `socket` and hands each socket of the reply to `on_socket` (its
/// `inet_diag_msg` and attributes).
fn dump(
    socket: &OwnedFd,
    msg: &InetDiagRequest,
    mut on_socket: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let len = size_of::<InetDiagRequest>();
    // SAFETY: sends the `len` bytes of a live #[repr(C)] struct without padding holes (its
    // size is asserted); to the kernel, so no address is needed.
    let sent = unsafe { libc::send(socket.as_raw_fd(), (&raw const *msg).cast(), len, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into a live buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if parse(&buf[..n as usize], &mut on_socket)? {
            return Ok(());
        }
    }
}

/// Hands the sockets in one datagram of replies to `on_socket`; true once the dump is done.
pub fn parse(
    mut data: &[u8],
    on_socket: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    while data.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HEADER || len > data.len() {
            return Err(truncated());
        }
        let payload = &data[NLMSG_HEADER..len];
        match kind {
            NLMSG_DONE => {
                // A dump that failed midway reports a negative errno here.
                if let Some(code) = payload.get(0..4) {
                    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                    if code < 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                return Ok(true);
            }
            NLMSG_ERROR => {
                let code = payload.get(0..4).ok_or_else(truncated)?;
                let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                return Err(io::Error::from_raw_os_error(errno));
            }
            _ => on_socket(payload)?,
        }
        data = data.get(len.div_ceil(4) * 4..).unwrap_or_default();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HEADER + payload.len()) as u32;
        let mut m = len.to_ne_bytes().to_vec();
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(payload);
        m.resize(m.len().div_ceil(4) * 4, 0);
        m
    }

    fn socket(state: u8, port: u16) -> Vec<u8> {
        let mut payload = vec![libc::AF_INET as u8, state, 0, 0];
        payload.extend(port.to_be_bytes());
        payload.resize(72, 0);
        message(TCPDIAG_GETSOCK, &payload)
    }

    fn parse_counts(data: &[u8], counts: &mut SocketCounts) -> io::Result<bool> {
        parse(data, &mut |payload| count_socket(payload, counts))
    }

    #[test]
    fn counts_states_and_listening_ports() {
        let mut data = socket(LISTEN, 8080);
        data.extend(socket(6, 8080)); // TIME_WAIT
        data.extend(socket(1, 40000));
        data.extend(socket(LISTEN, 22));
        let mut counts = SocketCounts::default();
        assert!(!parse_counts(&data, &mut counts).expect("parses"));
        assert_eq!(counts.by_state[10], 2);
        assert_eq!(counts.by_state[6], 1);
        assert_eq!(counts.by_state[1], 1);
        assert_eq!(counts.listening_ports, BTreeSet::from([22, 8080]));
        assert!(parse_counts(&message(NLMSG_DONE, &[0; 4]), &mut counts).expect("done"));
    }

    #[test]
    fn reports_kernel_errors_and_truncation() {
        let mut counts = SocketCounts::default();
        let err = parse_counts(&message(NLMSG_ERROR, &(-1i32).to_ne_bytes()), &mut counts)
            .expect_err("EPERM");
        assert_eq!(err.raw_os_error(), Some(1));
        let mut short = socket(1, 1);
        short.truncate(30);
        assert!(parse_counts(&short, &mut counts).is_err());
    }

    /// The request as the kernel reads it.
    fn bytes(request: &InetDiagRequest) -> [u8; REQUEST_LEN] {
        // SAFETY: a #[repr(C)] struct of integers without padding (its size is asserted): every
        // byte is initialised, and the array has its size.
        unsafe { std::mem::transmute_copy(request) }
    }

    #[test]
    fn request_asks_for_every_tcp_state_but_time_wait_of_both_families() {
        let r = bytes(&counting_request());
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 76);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 18);
        assert_eq!(r[16], 0, "AF_UNSPEC: both families in one walk");
        assert_eq!(
            u32::from_ne_bytes([r[68], r[69], r[70], r[71]]),
            !(1u32 << 6)
        );
    }

    #[test]
    fn reads_the_time_wait_count_from_sockstat() {
        let sockstat =
            "sockets: used 153\nTCP: inuse 7 orphan 0 tw 27839 alloc 9 mem 1\nUDP: inuse 2 mem 0\n";
        assert_eq!(time_wait_count(sockstat), Some(27839));
        assert_eq!(time_wait_count("sockets: used 1\n"), None);
    }

    #[test]
    fn tells_fin_wait2_mini_sockets_apart() {
        let mut mini = socket(FIN_WAIT2, 40000);
        mini[NLMSG_HEADER + 2] = TIMER_TIME_WAIT;
        let mut data = mini;
        data.extend(socket(FIN_WAIT2, 40001)); // a full socket, keepalive timer
        let mut counts = SocketCounts::default();
        parse_counts(&data, &mut counts).expect("parses");
        assert_eq!(counts.by_state[usize::from(FIN_WAIT2)], 2);
        assert_eq!(counts.fin_wait2_mini, 1);
    }
}
