//! Who owns a socket: the process the program saw act on it, kept in the socket's entry and
//! carried into tail events. Known only from transitions that run in the owner's context.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use tcpmon_common::{tcp_state, SocketEntry};

use crate::Transition;

/// The process a socket belongs to, as far as the program knows.
pub struct Owner {
    pub pid: u32,
    pub comm: [u8; 16],
}

impl Owner {
    #[inline(always)]
    pub fn none() -> Owner {
        Owner {
            pid: 0,
            comm: [0; 16],
        }
    }

    #[inline(always)]
    pub fn of_entry(entry: &SocketEntry) -> Owner {
        Owner {
            pid: entry.pid,
            comm: entry.comm,
        }
    }

    /// The current task. Only meaningful in process context: most transitions run in softirq,
    /// where the current task is whoever was interrupted.
    #[inline(always)]
    pub fn current() -> Owner {
        Owner {
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        }
    }

    #[inline(always)]
    pub fn store(&self, entry: &mut SocketEntry) {
        if self.pid != 0 {
            entry.pid = self.pid;
            entry.comm = self.comm;
        }
    }
}

/// Transitions that only system calls make (connect, listen, close, shutdown), so the current
/// task is the socket's owner.
#[inline(always)]
pub fn in_process_context(t: &Transition) -> bool {
    matches!(
        t.new,
        tcp_state::SYN_SENT | tcp_state::LISTEN | tcp_state::FIN_WAIT1 | tcp_state::LAST_ACK
    )
}
