use std::{io::Read, net::TcpListener, os::fd::AsRawFd, path::Path};

use tcpmon_common::AF_INET;

use super::*;

/// Hands out at most 50 bytes per read, so records arrive split across reads.
struct Trickle(io::Cursor<Vec<u8>>);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(50);
        self.0.read(&mut buf[..n])
    }
}

fn record(sport: u16, inode: u64) -> SocketRecord {
    SocketRecord {
        skaddr: 0xffff_0000 + u64::from(sport),
        entered_ns: 0,
        inode,
        cgroup_id: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        pid: 0,
        comm: [0; 16],
        family: AF_INET,
        sport,
        dport: 80,
        state: 1, // ESTABLISHED
        _pad: [0; 7],
    }
}

fn bytes_of(records: &[SocketRecord]) -> Vec<u8> {
    records
        .iter()
        .flat_map(|r| {
            // SAFETY: a #[repr(C)] record of integers, read as its bytes.
            unsafe { std::slice::from_raw_parts(std::ptr::from_ref(r).cast::<u8>(), 104) }
        })
        .copied()
        .collect()
}

fn socket_inode(listener: &TcpListener) -> u64 {
    let fd = listener.as_raw_fd();
    fs::metadata(format!("/proc/self/fd/{fd}"))
        .expect("stat the socket")
        .ino()
}

#[test]
fn streams_chunk_by_chunk_with_each_socket_owner() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let inode = socket_inode(&listener);
    let records = [record(1001, 0), record(1002, inode), record(1003, 0)];
    let workloads = Workloads::new(Some(Path::new("/nonexistent")), Path::new("/nonexistent"));
    let mut pieces = Vec::new();
    let mut answer = Answer::new(&workloads, 2, |piece| {
        pieces.push(piece);
        true
    });
    let source = Trickle(io::Cursor::new(bytes_of(&records)));
    assert!(for_each_record(source, |r| answer.push(7, r)).expect("reads"));
    assert!(answer.flush().expect("flushes"));
    assert_eq!(pieces.len(), 2, "one piece per chunk of two sockets");
    let lines: Vec<SocketLine> = pieces
        .concat()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a socket line"))
        .collect();
    let ports: Vec<u16> = lines.iter().map(|l| l.local_port).collect();
    assert_eq!(ports, [1001, 1002, 1003]);
    assert!(lines
        .iter()
        .all(|l| l.netns == 7 && l.state == "ESTABLISHED"));
    assert_eq!(
        lines[1].pid,
        Some(std::process::id()),
        "the owner, from /proc"
    );
    assert_eq!(lines[0].pid, None);
}

#[test]
fn stops_once_the_client_has_left() {
    let records = [record(1, 0), record(2, 0), record(3, 0)];
    let workloads = Workloads::new(Some(Path::new("/nonexistent")), Path::new("/nonexistent"));
    let mut sent = 0;
    let mut answer = Answer::new(&workloads, 1, |_| {
        sent += 1;
        false
    });
    let source = io::Cursor::new(bytes_of(&records));
    assert!(!for_each_record(source, |r| answer.push(7, r)).expect("reads"));
    drop(answer);
    assert_eq!(sent, 1, "nothing is made after the client left");
}
