//! Loading the eBPF program with this kernel's offsets, attaching it, and reading its maps.
mod bpf_call;
pub mod btf;
pub mod kernel_features;
pub mod map_batch;
pub mod offsets;
pub mod pin;
pub mod prog_stats;
pub mod readers;
mod reading;
pub mod resets;
pub mod socket_iter;

use std::{
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
};

use aya::{
    maps::{Array, HashMap, Map, MapData, RingBuf},
    programs::{BtfTracePoint, Iter, RawTracePoint},
    Btf as AyaBtf, Ebpf, EbpfLoader,
};
use tcpmon_common::{
    maps, TailFilter, COVER_PROGRAM_NAME, LISTENER_READER_NAME, NAMESPACE_READER_NAME,
    PROGRAM_NAME, SOCKETS_ITERATOR_NAME, STARTUP_WALK_ITERATOR_NAME,
    SYNACK_RETRANSMIT_PROGRAM_NAME, SYN_RETRANSMIT_PROGRAM_NAME, TRANSITION_SLOTS,
};

use self::resets::ReasonNames;
pub use self::{
    offsets::KernelOffsets,
    reading::{Snapshot, TrackedSockets},
};
use self::{
    prog_stats::ProgramStats,
    readers::{KernelReaders, ReaderParts},
    socket_iter::SocketIterator,
};
use crate::error::Error;

/// The programs counting handshake retransmissions, each on the tracepoint of its name.
const RETRANSMIT_PROGRAMS: [&str; 2] =
    [SYN_RETRANSMIT_PROGRAM_NAME, SYNACK_RETRANSMIT_PROGRAM_NAME];

/// The tracepoint the program attaches to.
pub const TRACEPOINT_NAME: &str = "inet_sock_set_state";

/// The eBPF object built by `build.rs`, embedded so the agent is one file.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpmon"));

/// Everything the program is configured with at load time.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub offsets: KernelOffsets,
    /// Inode of the only network namespace to count; `None` counts all of them.
    pub netns: Option<u32>,
    /// Capacity of the per-socket map.
    pub max_tracked_sockets: u32,
    /// Where each map kept across restarts is pinned (`--pin`); empty pins nothing.
    pub pins: Vec<(&'static str, PathBuf)>,
    /// Whether handshakes and teardowns are counted per socket cgroup (`--max-workloads` > 0).
    pub attribute_workloads: bool,
}

/// The loaded and attached program. Dropping it detaches and unloads everything.
pub struct Probe {
    ebpf: Ebpf,
    program_id: u32,
    /// The reset programs loaded for this kernel, with their tracepoints.
    reset_programs: [(&'static str, &'static str); 2],
    reset_reasons: ReasonNames,
    socket_iterator: Option<SocketIterator>,
    readers: Option<KernelReaders>,
    transitions_at_attach: Vec<u64>,
}

impl Probe {
    pub fn load(config: &ProbeConfig) -> Result<Probe, Error> {
        kernel_features::require()?;
        let o = &config.offsets;
        let netns = config.netns.unwrap_or(0);
        let attribute = u32::from(config.attribute_workloads);
        // The kernel's BTF, parsed once (it costs ~14 MB of peak memory per parse): the loader
        // parses its own copy in `new()`, which is dropped before this one is made and shared
        // by the loader and the attachment.
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        let btf = AyaBtf::from_sys_fs().map_err(|e| Error::Load(format!("kernel BTF: {e:#}")))?;
        loader.btf(Some(&btf));
        for (name, path) in &config.pins {
            // Reuses the map pinned there, or creates it and pins it there.
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .override_global("NETNS_FILTER", &netns, true)
            .override_global("SK_NET_OFFSET", &o.sk_net, true)
            .override_global("NET_INUM_OFFSET", &o.net_inum, true)
            .override_global("SK_ERR_OFFSET", &o.sk_err, true)
            .override_global("SRTT_OFFSET", &o.srtt, true)
            .override_global("SK_PROTOCOL_OFFSET", &o.sk_protocol, true)
            .override_global("SK_FAMILY_OFFSET", &o.sk_family, true)
            .override_global("INET_SPORT_OFFSET", &o.inet_sport, true)
            .override_global("SK_DPORT_OFFSET", &o.sk_dport, true)
            .override_global("SK_NUM_OFFSET", &o.sk_num, true)
            .override_global("SK_STATE_OFFSET", &o.sk_state, true)
            .override_global("SK_RCV_SADDR_OFFSET", &o.sk_rcv_saddr, true)
            .override_global("SK_DADDR_OFFSET", &o.sk_daddr, true)
            .override_global("SK_V6_RCV_SADDR_OFFSET", &o.sk_v6_rcv_saddr, true)
            .override_global("SK_V6_DADDR_OFFSET", &o.sk_v6_daddr, true)
            .override_global("SKB_DEV_OFFSET", &o.skb_dev, true)
            .override_global("DEV_NET_OFFSET", &o.dev_net, true)
            .override_global("SKB_HEAD_OFFSET", &o.skb_head, true)
            .override_global("SKB_TRANSPORT_HEADER_OFFSET", &o.skb_transport_header, true)
            .override_global("SK_SOCKET_OFFSET", &o.sk_socket, true)
            .override_global("SOCKET_INODE_OFFSET", &o.socket_inode, true)
            .override_global("INODE_INO_OFFSET", &o.inode_ino, true)
            .override_global(
                "SK_CGRP_OFFSET",
                &o.cgroup.map_or(0, |c| c.sk_cgrp_data),
                true,
            )
            .override_global(
                "CGROUP_KN_OFFSET",
                &o.cgroup.map_or(0, |c| c.cgroup_kn),
                true,
            )
            .override_global("KN_ID_OFFSET", &o.cgroup.map_or(0, |c| c.kn_id), true)
            .override_global(
                "CGROUP_TYPED",
                &o.cgroup.map_or(0u32, |c| u32::from(c.typed)),
                true,
            )
            .override_global("ATTRIBUTE_WORKLOADS", &attribute, true)
            .override_global("SK_DROPS_OFFSET", &o.sk_drops, true)
            .override_global("SK_ACK_BACKLOG_OFFSET", &o.sk_ack_backlog, true)
            .override_global("SK_MAX_ACK_BACKLOG_OFFSET", &o.sk_max_ack_backlog, true)
            .override_global("ACCEPT_QLEN_OFFSET", &o.accept_qlen, true)
            .override_global("TW_DEATH_ROW_OFFSET", &o.time_wait.death_row, true)
            .override_global("TW_INDIRECT", &u32::from(o.time_wait.indirect), true)
            .override_global("TW_COUNT_OFFSET", &o.time_wait.count, true)
            .override_global("TW_BIAS", &o.time_wait.bias, true)
            .override_global("NS_REFS_OFFSET", &o.ns_refs, true)
            .map_max_entries(maps::SOCKETS, config.max_tracked_sockets)
            .load(OBJECT)
            .map_err(|e| Error::Load(format!("{e:#}")))?;
        // Nothing counts before the program is attached: the counts now are where the
        // sockets-per-state arithmetic starts (`metrics::socket_states`).
        let transitions_at_attach = match ebpf.map(maps::TRANSITIONS) {
            Some(Map::PerCpuArray(data)) => {
                reading::sum_counters(data, TRANSITION_SLOTS, maps::ROWS)
                    .map_err(|e| map_error(maps::TRANSITIONS, "read", e))?
            }
            _ => return Err(map_error(maps::TRANSITIONS, "find", "missing")),
        };
        // The main program first: the kernel runs a tracepoint's programs in the order they
        // were attached, and the cover must run after it for every transition.
        let program_id = attach(&mut ebpf, PROGRAM_NAME, TRACEPOINT_NAME, &btf)?;
        attach(&mut ebpf, COVER_PROGRAM_NAME, TRACEPOINT_NAME, &btf)?;
        for program in RETRANSMIT_PROGRAMS {
            attach(&mut ebpf, program, program, &btf)?;
        }
        let reset_programs = resets::programs(o);
        for (program, tracepoint) in reset_programs {
            attach(&mut ebpf, program, tracepoint, &btf)?;
        }
        let socket_iterator = SocketIterator::new(load_iterator(
            &mut ebpf,
            SOCKETS_ITERATOR_NAME,
            "tcp",
            &btf,
        )?);
        let readers = load_readers(&mut ebpf, &btf)?;
        drop(btf);
        Ok(Probe {
            ebpf,
            program_id,
            reset_programs,
            reset_reasons: ReasonNames::new(o.reset_reasons.as_deref().unwrap_or_default()),
            socket_iterator: Some(socket_iterator),
            readers: Some(readers),
            transitions_at_attach,
        })
    }

    /// Run count, run time and recursion misses of the main program, of its cover, then of
    /// the retransmission and reset programs.
    pub fn program_stats(&self) -> Result<[ProgramStats; 6], Error> {
        Ok([
            self.stats_of(PROGRAM_NAME)?,
            self.stats_of(COVER_PROGRAM_NAME)?,
            self.stats_of(RETRANSMIT_PROGRAMS[0])?,
            self.stats_of(RETRANSMIT_PROGRAMS[1])?,
            self.stats_of(self.reset_programs[0].0)?,
            self.stats_of(self.reset_programs[1].0)?,
        ])
    }

    fn stats_of(&self, name: &'static str) -> Result<ProgramStats, Error> {
        let stats_error = |cause: String| Error::ProgramStats { cause };
        let program: &BtfTracePoint = self
            .ebpf
            .program(name)
            .ok_or_else(|| stats_error(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| stats_error(format!("{e:#}")))?;
        let fd = program
            .fd()
            .map_err(|e| stats_error(format!("program fd: {e:#}")))?;
        prog_stats::read(&fd.as_fd().as_raw_fd()).map_err(|e| stats_error(e.to_string()))
    }

    /// The kernel's id for the attached program (as `bpftool prog show` lists it).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.ebpf
            .map(name)
            .ok_or_else(|| map_error(name, "find", "missing from the eBPF object"))
    }

    fn map_data(&self, name: &'static str) -> Result<&MapData, Error> {
        match self.map(name)? {
            Map::PerCpuArray(data) | Map::LruHashMap(data) | Map::HashMap(data) => Ok(data),
            _ => Err(map_error(name, "find", "it has an unexpected type")),
        }
    }

    fn read_error(name: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |cause| map_error(name, "read", cause)
    }

    /// Takes the trouble ring buffer out of the probe, for `tail --recent`.
    pub fn take_trouble_ring(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = self
            .ebpf
            .take_map(maps::TROUBLE)
            .ok_or_else(|| map_error(maps::TROUBLE, "find", "missing from the eBPF object"))?;
        RingBuf::try_from(map).map_err(|e| map_error(maps::TROUBLE, "open", e))
    }

    /// Takes the kernel readers out of the probe, for the scrape and the listen watcher.
    pub fn take_readers(&mut self) -> Option<KernelReaders> {
        self.readers.take()
    }

    /// Takes the socket iterator out of the probe, for the tail socket's `sockets` requests.
    pub fn take_socket_iterator(&mut self) -> Option<SocketIterator> {
        self.socket_iterator.take()
    }

    /// Takes the tail's maps out of the probe: the ring buffer of events and the filter that
    /// selects what the program writes to it. Call once, before the probe is shared.
    pub fn take_tail_maps(
        &mut self,
    ) -> Result<(RingBuf<MapData>, Array<MapData, TailFilter>), Error> {
        let mut take = |name: &'static str| {
            self.ebpf
                .take_map(name)
                .ok_or_else(|| map_error(name, "find", "missing from the eBPF object"))
        };
        let events = take(maps::EVENTS)?;
        let filter = take(maps::TAIL_FILTER)?;
        Ok((
            RingBuf::try_from(events).map_err(|e| map_error(maps::EVENTS, "open", e))?,
            Array::try_from(filter).map_err(|e| map_error(maps::TAIL_FILTER, "open", e))?,
        ))
    }

    /// The (port, slot) assignments in the kernel's port table: empty for a new table, those
    /// of the previous agent for a pinned one.
    pub fn port_slots(&self) -> Result<Vec<(u16, u32)>, Error> {
        let ports: HashMap<&MapData, u16, u32> = HashMap::try_from(self.map(maps::PORTS)?)
            .map_err(|e| map_error(maps::PORTS, "open", e))?;
        ports
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| map_error(maps::PORTS, "read", e))
    }

    /// Gives `port` its own label value: the program counts it in `slot` from now on.
    pub fn set_port_slot(&mut self, port: u16, slot: u32) -> Result<(), Error> {
        let map = self
            .ebpf
            .map_mut(maps::PORTS)
            .ok_or_else(|| map_error(maps::PORTS, "find", "missing from the eBPF object"))?;
        let mut ports: HashMap<&mut MapData, u16, u32> =
            HashMap::try_from(map).map_err(|e| map_error(maps::PORTS, "open", e))?;
        ports
            .insert(port, slot, 0)
            .map_err(|e| map_error(maps::PORTS, "write", e))
    }
}

/// Loads the iterator program `name` over `target` (not attached: each read makes its own
/// link) and returns a descriptor of it.
fn load_iterator(
    ebpf: &mut Ebpf,
    name: &'static str,
    target: &str,
    btf: &AyaBtf,
) -> Result<aya::programs::ProgramFd, Error> {
    let program: &mut Iter = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Load(format!("program {name} missing from object")))?
        .try_into()
        .map_err(|e| Error::Load(format!("{e:#}")))?;
    program
        .load(target, btf)
        .map_err(|e| Error::Load(format!("verifier: {name}: {e:#}")))?;
    program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|e| Error::Load(format!("{name}: {e:#}")))
}

/// Loads the readers (never attached: run on demand), the start-up walk and descriptors of
/// their maps.
fn load_readers(ebpf: &mut Ebpf, btf: &AyaBtf) -> Result<KernelReaders, Error> {
    let startup_walk = load_iterator(ebpf, STARTUP_WALK_ITERATOR_NAME, "tcp", btf)?;
    let listener_reader = load_reader(ebpf, LISTENER_READER_NAME)?;
    let namespace_reader = load_reader(ebpf, NAMESPACE_READER_NAME)?;
    let fd = |name: &'static str| match ebpf.map(name) {
        Some(Map::HashMap(data) | Map::Array(data)) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| map_error(name, "open", e)),
        _ => Err(map_error(name, "find", "missing from the eBPF object")),
    };
    let maps = [
        fd(maps::LISTENERS)?,
        fd(maps::LISTENER_QUERY)?,
        fd(maps::LISTENER_ANSWERS)?,
        fd(maps::NAMESPACES)?,
        fd(maps::NAMESPACE_ANSWERS)?,
        fd(maps::STARTUP)?,
        fd(maps::FIRST_SEEN)?,
    ];
    KernelReaders::new(ReaderParts {
        listener_reader,
        namespace_reader,
        startup_walk,
        maps,
    })
    .map_err(|e| map_error(maps::LISTENERS, "open", e))
}

/// Loads the raw tracepoint program `name`, never attached, and returns a descriptor of it.
fn load_reader(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::programs::ProgramFd, Error> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Load(format!("program {name} missing from object")))?
        .try_into()
        .map_err(|e| Error::Load(format!("{e:#}")))?;
    program
        .load()
        .map_err(|e| Error::Load(format!("verifier: {name}: {e:#}")))?;
    program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|e| Error::Load(format!("{name}: {e:#}")))
}

/// Loads program `name` of the object for `tracepoint` and attaches it; returns its id.
fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    tracepoint: &'static str,
    btf: &AyaBtf,
) -> Result<u32, Error> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Load(format!("program {name} missing from object")))?
        .try_into()
        .map_err(|e| Error::Load(format!("{e:#}")))?;
    program
        .load(tracepoint, btf)
        .map_err(|e| Error::Load(format!("verifier: {e:#}")))?;
    program
        .attach()
        .map_err(|e| Error::Load(format!("attach: {e:#}")))?;
    Ok(program
        .info()
        .map_err(|e| Error::Load(format!("program info: {e:#}")))?
        .id())
}

/// A failed operation on one of the program's maps, named.
fn map_error(map: &'static str, op: &'static str, cause: impl std::fmt::Display) -> Error {
    Error::Map {
        map,
        op,
        cause: format!("{cause:#}"),
    }
}
