//! Kernel struct offsets the program needs, and what the kernel's BTF says about it.
use super::btf::{Btf, VMLINUX_BTF};
use crate::error::Error;

/// The typedef the kernel's BTF declares for the tracepoint.
const TRACEPOINT_TYPEDEF: &str = "btf_trace_inet_sock_set_state";

/// Kernel struct offsets the program needs, read from BTF, and one property of the kernel that
/// its BTF reveals.
#[derive(Clone, Debug)]
pub struct KernelOffsets {
    /// The kernel silently skips BPF tracing programs while a thread of PID 1 is the current
    /// task, unless PID 1 loaded them (the sandbox kernels tcpmon is developed on patch
    /// `__bpf_trace_run` this way; their `struct bpf_prog_aux` has an `init_owned` member that
    /// mainline lacks). Transitions the kernel makes in an interrupt that lands on PID 1 are
    /// then neither counted nor reported as skipped runs.
    pub skips_runs_under_init: bool,
    /// `struct sock.__sk_common.skc_net.net`
    pub sk_net: u32,
    /// `struct net.ns.inum`
    pub net_inum: u32,
    /// `struct sock.sk_err`
    pub sk_err: u32,
    /// `struct tcp_sock.srtt_us`
    pub srtt: u32,
    /// `struct sock.sk_protocol`
    pub sk_protocol: u32,
    /// `struct sock.__sk_common.skc_family`
    pub sk_family: u32,
    /// `struct inet_sock.inet_sport`
    pub inet_sport: u32,
    /// `struct sock.__sk_common.skc_dport`
    pub sk_dport: u32,
    /// `struct sock.__sk_common.skc_num`
    pub sk_num: u32,
    /// `struct sock.__sk_common.skc_state`
    pub sk_state: u32,
    /// `struct sock.__sk_common.skc_rcv_saddr`
    pub sk_rcv_saddr: u32,
    /// `struct sock.__sk_common.skc_daddr`
    pub sk_daddr: u32,
    /// `struct sock.__sk_common.skc_v6_rcv_saddr`
    pub sk_v6_rcv_saddr: u32,
    /// `struct sock.__sk_common.skc_v6_daddr`
    pub sk_v6_daddr: u32,
    /// `struct sk_buff.dev`
    pub skb_dev: u32,
    /// `struct net_device.nd_net.net`
    pub dev_net: u32,
    /// `struct sk_buff.head`
    pub skb_head: u32,
    /// `struct sk_buff.transport_header`
    pub skb_transport_header: u32,
    /// `struct sock.sk_socket`
    pub sk_socket: u32,
    /// `struct socket_alloc.vfs_inode`
    pub socket_inode: u32,
    /// `struct inode.i_ino`
    pub inode_ino: u32,
    /// `struct sock.sk_drops`, `struct sock.sk_ack_backlog`, `struct sock.sk_max_ack_backlog`
    /// and `struct inet_connection_sock.icsk_accept_queue.qlen`: a listener's counts.
    pub sk_drops: u32,
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    pub accept_qlen: u32,
    /// Where a namespace's time-wait count is.
    pub time_wait: TimeWaitOffsets,
    /// `struct net.ns.__ns_ref` (6.18+), `struct net.ns.count` or, where `ns_common` has no
    /// count, `struct net.count`: 0 once a namespace is gone.
    pub ns_refs: u32,
    /// Where a socket's cgroup is; `None` on kernels built without socket cgroup data
    /// (`CONFIG_SOCK_CGROUP_DATA`), where no socket has a workload.
    pub cgroup: Option<CgroupOffsets>,
    /// The names of the kernel's reset reasons (`enum sk_rst_reason`, Linux 6.10+, which is also
    /// when `tcp_send_reset` began to carry one), by value; `None` before.
    pub reset_reasons: Option<Vec<(u32, String)>>,
}

impl KernelOffsets {
    pub fn from_vmlinux() -> Result<KernelOffsets, Error> {
        let data = std::fs::read(VMLINUX_BTF).map_err(|cause| Error::BtfMissing {
            path: VMLINUX_BTF,
            cause,
        })?;
        let layout = |reason| Error::BtfLayout {
            path: VMLINUX_BTF,
            reason,
        };
        let btf = Btf::parse(&data).map_err(layout)?;
        if !btf.has_typedef(TRACEPOINT_TYPEDEF) {
            return Err(Error::TracepointMissing {
                path: VMLINUX_BTF,
                typedef: TRACEPOINT_TYPEDEF,
            });
        }
        let common = |member| {
            btf.member_offset("sock", &["__sk_common", member])
                .map_err(layout)
        };
        Ok(KernelOffsets {
            skips_runs_under_init: btf.member_offset("bpf_prog_aux", &["init_owned"]).is_ok(),
            sk_net: btf
                .member_offset("sock", &["__sk_common", "skc_net", "net"])
                .map_err(layout)?,
            net_inum: btf.member_offset("net", &["ns", "inum"]).map_err(layout)?,
            sk_err: btf.member_offset("sock", &["sk_err"]).map_err(layout)?,
            srtt: btf
                .member_offset("tcp_sock", &["srtt_us"])
                .map_err(layout)?,
            sk_protocol: btf
                .member_offset("sock", &["sk_protocol"])
                .map_err(layout)?,
            sk_family: common("skc_family")?,
            inet_sport: btf
                .member_offset("inet_sock", &["inet_sport"])
                .map_err(layout)?,
            sk_dport: common("skc_dport")?,
            sk_num: common("skc_num")?,
            sk_state: common("skc_state")?,
            sk_rcv_saddr: common("skc_rcv_saddr")?,
            sk_daddr: common("skc_daddr")?,
            sk_v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
            sk_v6_daddr: common("skc_v6_daddr")?,
            skb_dev: btf.member_offset("sk_buff", &["dev"]).map_err(layout)?,
            dev_net: btf
                .member_offset("net_device", &["nd_net", "net"])
                .map_err(layout)?,
            skb_head: btf.member_offset("sk_buff", &["head"]).map_err(layout)?,
            skb_transport_header: btf
                .member_offset("sk_buff", &["transport_header"])
                .map_err(layout)?,
            sk_socket: btf.member_offset("sock", &["sk_socket"]).map_err(layout)?,
            socket_inode: btf
                .member_offset("socket_alloc", &["vfs_inode"])
                .map_err(layout)?,
            inode_ino: btf.member_offset("inode", &["i_ino"]).map_err(layout)?,
            sk_drops: btf.member_offset("sock", &["sk_drops"]).map_err(layout)?,
            sk_ack_backlog: btf
                .member_offset("sock", &["sk_ack_backlog"])
                .map_err(layout)?,
            sk_max_ack_backlog: btf
                .member_offset("sock", &["sk_max_ack_backlog"])
                .map_err(layout)?,
            accept_qlen: btf
                .member_offset("inet_connection_sock", &["icsk_accept_queue", "qlen"])
                .map_err(layout)?,
            time_wait: TimeWaitOffsets::from_btf(&btf).map_err(layout)?,
            ns_refs: btf
                .member_offset("net", &["ns", "__ns_ref"])
                .or_else(|_| btf.member_offset("net", &["ns", "count"]))
                .or_else(|_| btf.member_offset("net", &["count"]))
                .map_err(layout)?,
            cgroup: CgroupOffsets::from_btf(&btf),
            reset_reasons: btf.enum_values("sk_rst_reason"),
        })
    }
}

/// `struct sock.sk_cgrp_data` (its first word: the `struct cgroup *`, or before 5.15 a union
/// whose bit 0 says it holds net_prio / net_cls data instead), `struct cgroup.kn` and
/// `struct kernfs_node.id` (a u64 since 5.5: the cgroup directory's inode number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupOffsets {
    pub sk_cgrp_data: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    /// `sk_cgrp_data.cgroup` is a typed `struct cgroup *` (5.15+): the program follows it, and
    /// `kn`, with plain loads the verifier checks against BTF, instead of three helper reads of
    /// the untyped union word.
    pub typed: bool,
}

impl CgroupOffsets {
    fn from_btf(btf: &Btf) -> Option<CgroupOffsets> {
        Some(CgroupOffsets {
            sk_cgrp_data: btf.member_offset("sock", &["sk_cgrp_data"]).ok()?,
            cgroup_kn: btf.member_offset("cgroup", &["kn"]).ok()?,
            kn_id: btf.member_offset("kernfs_node", &["id"]).ok()?,
            typed: btf
                .member_offset("sock", &["sk_cgrp_data", "cgroup"])
                .is_ok(),
        })
    }
}

/// Where `/proc/net/sockstat`'s "tw" of a namespace lives: `struct net.ipv4.tcp_death_row`, a
/// struct with `tw_refcount` (one more than the count) since 6.2, a pointer to one in
/// 5.19-6.1, and a struct with `tw_count` (the count) before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWaitOffsets {
    /// Offset of the pointer in `struct net` (used only when `indirect`).
    pub death_row: u32,
    pub indirect: bool,
    /// Offset of the count: in `struct net`, or in the pointed-to struct when `indirect`.
    pub count: u32,
    /// What to subtract from the count.
    pub bias: u32,
}

impl TimeWaitOffsets {
    fn from_btf(btf: &Btf) -> Result<TimeWaitOffsets, String> {
        let row = ["ipv4", "tcp_death_row"];
        for (field, bias) in [("tw_refcount", 1), ("tw_count", 0)] {
            if let Ok(count) = btf.member_offset("net", &[row[0], row[1], field]) {
                return Ok(TimeWaitOffsets {
                    death_row: 0,
                    indirect: false,
                    count,
                    bias,
                });
            }
        }
        Ok(TimeWaitOffsets {
            death_row: btf.member_offset("net", &row)?,
            indirect: true,
            count: btf.member_offset("inet_timewait_death_row", &["tw_refcount"])?,
            bias: 1,
        })
    }
}
