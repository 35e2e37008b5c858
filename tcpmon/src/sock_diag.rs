//! Counting the TCP sockets of the current network namespace with NETLINK_SOCK_DIAG, as `ss`
//! does. The tracepoint never sees TIME_WAIT (a separate mini-socket), so socket counts per
//! state come from here, and so do the listening ports that get their own `port` label.
use std::{collections::BTreeSet, io};

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
const TCP_FIN_WAIT2: u8 = 5;
const TCP_TIME_WAIT: u8 = 6;
const TCP_LISTEN: u8 = 10;
/// `idiag_timer` of a time-wait mini-socket.
const TIMER_TIME_WAIT: u8 = 3;
/// Kernel states are 1..=12; index 0 is unused.
pub const STATE_SLOTS: usize = 13;

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

/// An `AF_NETLINK` socket, closed on drop.
struct Netlink(i32);

impl Drop for Netlink {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

/// Counts the IPv4 and IPv6 TCP sockets of the calling thread's network namespace.
///
/// TIME_WAIT sockets are not dumped, only counted: a busy host holds tens of thousands, and
/// formatting one netlink message each made a scrape take 15 ms. The namespace's time-wait
/// count (`/proc/net/sockstat`, "tw") covers every mini-socket; those still in the FIN_WAIT2
/// substate are dumped (as `ss` shows them, in FIN_WAIT2) and taken out of it.
pub fn count_tcp_sockets() -> io::Result<SocketCounts> {
    let mut counts = SocketCounts::default();
    dump(&mut counts)?;
    let sockstat = std::fs::read_to_string("/proc/thread-self/net/sockstat")?;
    let mini_sockets = time_wait_count(&sockstat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no TCP tw count in sockstat"))?;
    counts.by_state[usize::from(TCP_TIME_WAIT)] =
        mini_sockets.saturating_sub(counts.fin_wait2_mini);
    Ok(counts)
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

/// The request: `nlmsghdr` + the original `struct inet_diag_req`, as `TCPDIAG_GETSOCK`, asking
/// for the TCP sockets in every state but TIME_WAIT.
///
/// Not `SOCK_DIAG_BY_FAMILY` with an `inet_diag_req_v2`, which names one address family: every
/// dump walks the whole established hash of the host (all namespaces and both families share
/// it, time-wait entries included), and the original request dumps both families in a single
/// walk (the kernel reads it as family `AF_UNSPEC`). After a connection storm that left 100,000
/// time-wait entries, that walk is most of a scrape.
fn request() -> [u8; REQUEST_LEN] {
    let mut msg = [0u8; REQUEST_LEN];
    msg[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    // inet_diag_req: family, source and destination prefix lengths, extensions, the socket id
    // (48 bytes), then the states to dump and an unused table mask.
    let states: u32 = !(1 << TCP_TIME_WAIT);
    let states_at = NLMSG_HEADER + 4 + 48;
    msg[states_at..states_at + 4].copy_from_slice(&states.to_ne_bytes());
    msg
}

fn dump(counts: &mut SocketCounts) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the descriptor is owned by `Netlink` from here on.
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
    let socket = Netlink(fd);
    let msg = request();
    // SAFETY: sends `msg.len()` bytes from a live buffer (to the kernel: no address needed).
    if unsafe { libc::send(socket.0, msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into a live buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(socket.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if parse(&buf[..n as usize], counts)? {
            return Ok(());
        }
    }
}

/// Adds the sockets in one datagram of replies; true once the dump is done.
pub fn parse(mut data: &[u8], counts: &mut SocketCounts) -> io::Result<bool> {
    let truncated = || io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message");
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
            _ => {
                // inet_diag_msg: family, state, timer, retrans, then the socket id whose first
                // field is the source port in network byte order.
                let head = payload.get(0..6).ok_or_else(truncated)?;
                let (state, timer) = (head[1], head[2]);
                if let Some(slot) = counts.by_state.get_mut(usize::from(state)) {
                    *slot += 1;
                }
                if state == TCP_FIN_WAIT2 && timer == TIMER_TIME_WAIT {
                    counts.fin_wait2_mini += 1;
                }
                if state == TCP_LISTEN {
                    counts
                        .listening_ports
                        .insert(u16::from_be_bytes([head[4], head[5]]));
                }
            }
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

    #[test]
    fn counts_states_and_listening_ports() {
        let mut data = socket(TCP_LISTEN, 8080);
        data.extend(socket(6, 8080)); // TIME_WAIT
        data.extend(socket(1, 40000));
        data.extend(socket(TCP_LISTEN, 22));
        let mut counts = SocketCounts::default();
        assert!(!parse(&data, &mut counts).expect("parses"));
        assert_eq!(counts.by_state[10], 2);
        assert_eq!(counts.by_state[6], 1);
        assert_eq!(counts.by_state[1], 1);
        assert_eq!(counts.listening_ports, BTreeSet::from([22, 8080]));
        assert!(parse(&message(NLMSG_DONE, &[0; 4]), &mut counts).expect("done"));
    }

    #[test]
    fn reports_kernel_errors_and_truncation() {
        let mut counts = SocketCounts::default();
        let err =
            parse(&message(NLMSG_ERROR, &(-1i32).to_ne_bytes()), &mut counts).expect_err("EPERM");
        assert_eq!(err.raw_os_error(), Some(1));
        let mut short = socket(1, 1);
        short.truncate(30);
        assert!(parse(&short, &mut counts).is_err());
    }

    #[test]
    fn request_asks_for_every_tcp_state_but_time_wait_of_both_families() {
        let r = request();
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
        let mut mini = socket(TCP_FIN_WAIT2, 40000);
        mini[NLMSG_HEADER + 2] = TIMER_TIME_WAIT;
        let mut data = mini;
        data.extend(socket(TCP_FIN_WAIT2, 40001)); // a full socket, keepalive timer
        let mut counts = SocketCounts::default();
        parse(&data, &mut counts).expect("parses");
        assert_eq!(counts.by_state[usize::from(TCP_FIN_WAIT2)], 2);
        assert_eq!(counts.fin_wait2_mini, 1);
    }
}
