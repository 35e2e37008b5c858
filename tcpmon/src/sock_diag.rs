//! Counting the TCP sockets of the current network namespace with NETLINK_SOCK_DIAG, as `ss`
//! does. The tracepoint never sees TIME_WAIT (a separate mini-socket), so socket counts per
//! state come from here, and so do the listening ports that get their own `port` label.
use std::{collections::BTreeSet, io};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HEADER: usize = 16;
const TCP_LISTEN: u8 = 10;
/// Kernel states are 1..=12; index 0 is unused.
pub const STATE_SLOTS: usize = 13;

/// Sockets per raw kernel state, and the ports of listening sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketCounts {
    pub by_state: [u64; STATE_SLOTS],
    pub listening_ports: BTreeSet<u16>,
}

impl SocketCounts {
    pub fn add(&mut self, other: &SocketCounts) {
        for (total, n) in self.by_state.iter_mut().zip(other.by_state) {
            *total += n;
        }
        self.listening_ports.extend(&other.listening_ports);
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
pub fn count_tcp_sockets() -> io::Result<SocketCounts> {
    let mut counts = SocketCounts::default();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        dump(family, &mut counts)?;
    }
    Ok(counts)
}

/// The request: `nlmsghdr` + `inet_diag_req_v2` asking for every TCP socket of `family`.
fn request(family: u8) -> [u8; 72] {
    let mut msg = [0u8; 72];
    msg[0..4].copy_from_slice(&72u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[16] = family;
    msg[17] = libc::IPPROTO_TCP as u8;
    msg[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    msg
}

fn dump(family: u8, counts: &mut SocketCounts) -> io::Result<()> {
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
    let msg = request(family);
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
                let state = head[1];
                if let Some(slot) = counts.by_state.get_mut(usize::from(state)) {
                    *slot += 1;
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
        message(SOCK_DIAG_BY_FAMILY, &payload)
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
    fn request_asks_for_every_tcp_state() {
        let r = request(libc::AF_INET6 as u8);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 72);
        assert_eq!(r[16], libc::AF_INET6 as u8);
        assert_eq!(r[17], 6);
        assert_eq!(&r[20..24], &[0xff; 4]);
    }
}
