//! The socket iterator (`iter/tcp`) behind `tcpmon sockets`: for each full TCP socket of the
//! network namespace that opened the iterator, one [`SocketRecord`] with its endpoints, state,
//! inode, and when it entered that state (from the per-socket map, if tcpmon saw it). It runs
//! only when the agent reads it, never on the hot path.
use core::ffi::c_void;

use tcpmon_common::{tcp_state, SocketRecord, AF_INET, AF_INET6};

use crate::{
    config::{
        global, INODE_INO_OFFSET, SK_DPORT_OFFSET, SK_FAMILY_OFFSET, SK_NUM_OFFSET,
        SK_SOCKET_OFFSET, SK_STATE_OFFSET, SOCKET_INODE_OFFSET,
    },
    kernel::{read_kernel, seq_write, sock_field, socket_cgroup_id, write_addresses},
    maps::SOCKETS,
};

/// `struct bpf_iter__tcp { struct bpf_iter_meta *meta; struct sock_common *sk_common; uid }`;
/// `bpf_iter_meta` begins with its `struct seq_file *seq`.
#[no_mangle]
#[link_section = "iter/tcp"]
pub extern "C" fn tcpmon_sockets(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const u64;
    // SAFETY: the kernel's context, as laid out above; both pointers are BTF-typed, and the
    // socket is NULL on the last call.
    let (meta, sk) = unsafe { (*ctx as *const u8, *ctx.add(1) as *const u8) };
    if sk.is_null() {
        return 0;
    }
    let state: u8 = sock_field(sk, &SK_STATE_OFFSET);
    let family: u16 = sock_field(sk, &SK_FAMILY_OFFSET);
    // Time-wait and request sockets are mini-sockets: `ss` lists them, tcpmon does not track
    // them, and they have no `struct socket`.
    let mini =
        i32::from(state) == tcp_state::TIME_WAIT || i32::from(state) == tcp_state::NEW_SYN_RECV;
    if mini || (family != AF_INET && family != AF_INET6) {
        return 0;
    }
    let mut record = SocketRecord {
        skaddr: sk as u64,
        entered_ns: 0,
        inode: 0,
        cgroup_id: socket_cgroup_id(sk),
        saddr: [0; 16],
        daddr: [0; 16],
        pid: 0,
        comm: [0; 16],
        family,
        sport: sock_field(sk, &SK_NUM_OFFSET),
        dport: u16::from_be(sock_field(sk, &SK_DPORT_OFFSET)),
        state,
        _pad: [0; 7],
    };
    // SAFETY: the address arrays of a live, 8-byte aligned record (at offsets 32 and 48).
    unsafe {
        write_addresses(
            sk,
            family,
            (&raw mut record.saddr).cast(),
            (&raw mut record.daddr).cast(),
        );
    }
    if let Some(entry) = SOCKETS.get_ptr(sk as u64) {
        // SAFETY: the map returned a valid pointer to this socket's entry.
        let entry = unsafe { &*entry };
        // An entry for another state is stale: its time says nothing about this one.
        if entry.state == i32::from(state) {
            record.entered_ns = entry.entered_ns;
        }
        record.pid = entry.pid;
        record.comm = entry.comm;
    }
    // `sk_socket` lies past `sock_common`, which is all the iterator's type says: read it
    // with the helper. The inode follows the `struct socket` in `struct socket_alloc`.
    if let Ok(socket) = read_kernel::<u64>(sk as u64, global(&SK_SOCKET_OFFSET)) {
        if socket != 0 {
            let inode = socket + u64::from(global(&SOCKET_INODE_OFFSET));
            record.inode = read_kernel::<u64>(inode, global(&INODE_INO_OFFSET)).unwrap_or(0);
        }
    }
    seq_write(meta, &record);
    0
}
