//! Loading the eBPF program with this kernel's offsets, attaching it, and reading its maps.
use std::{
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
};

use aya::{
    maps::{Array, HashMap, Map, MapData, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use tcpmon_common::{
    DwellHistogram, SocketEntry, COUNTER_SLOTS, HANDSHAKE_DURATION_SLOTS, HANDSHAKE_SLOTS,
    MAP_COUNTERS, MAP_DWELL, MAP_EVENTS, MAP_HANDSHAKES, MAP_HANDSHAKE_DURATION, MAP_PORTS,
    MAP_SOCKETS, MAP_TAIL_SWITCH, MAP_TEARDOWNS, MAP_TRANSITIONS, PROGRAM_NAME, STATE_SLOTS,
    TEARDOWN_SLOTS, TRANSITION_SLOTS,
};

use crate::{
    btf::{Btf, VMLINUX_BTF},
    error::Error,
    histogram, kernel_features, map_batch,
    prog_stats::{self, ProgramStats},
    tracefs::{TracepointLayout, TRACEPOINT_CATEGORY, TRACEPOINT_NAME},
};

/// The eBPF object built by `build.rs`, embedded so the agent is one file.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpmon"));

/// Kernel struct offsets the program needs, read from BTF.
#[derive(Clone, Copy, Debug)]
pub struct KernelOffsets {
    /// `struct sock.__sk_common.skc_net.net`
    pub sk_net: u32,
    /// `struct net.ns.inum`
    pub net_inum: u32,
    /// `struct sock.sk_err`
    pub sk_err: u32,
    /// `struct tcp_sock.srtt_us`
    pub srtt: u32,
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
        Ok(KernelOffsets {
            sk_net: btf
                .member_offset("sock", &["__sk_common", "skc_net", "net"])
                .map_err(layout)?,
            net_inum: btf.member_offset("net", &["ns", "inum"]).map_err(layout)?,
            sk_err: btf.member_offset("sock", &["sk_err"]).map_err(layout)?,
            srtt: btf
                .member_offset("tcp_sock", &["srtt_us"])
                .map_err(layout)?,
        })
    }
}

/// Everything the program is configured with at load time.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub layout: TracepointLayout,
    pub offsets: KernelOffsets,
    /// Inode of the only network namespace to count; `None` counts all of them.
    pub netns: Option<u32>,
    /// Capacity of the per-socket map.
    pub max_tracked_sockets: u32,
    /// Where each map kept across restarts is pinned (`--pin`); empty pins nothing.
    pub pins: Vec<(&'static str, PathBuf)>,
}

/// The loaded and attached program. Dropping it detaches and unloads everything.
pub struct Probe {
    ebpf: Ebpf,
    program_id: u32,
}

/// One read of every aggregate map, summed over CPUs.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Indexed by `tcpmon_common::transition_index`.
    pub transitions: Vec<u64>,
    /// Indexed by raw TCP state.
    pub dwell: Vec<DwellHistogram>,
    /// Indexed by the `COUNTER_*` constants.
    pub counters: Vec<u64>,
    /// Indexed by `tcpmon_common::handshake_index`.
    pub handshakes: Vec<u64>,
    /// Indexed by `tcpmon_common::handshake_duration_index`.
    pub handshake_duration: Vec<DwellHistogram>,
    /// Indexed by `tcpmon_common::teardown_index`.
    pub teardowns: Vec<u64>,
}

impl Probe {
    pub fn load(config: &ProbeConfig) -> Result<Probe, Error> {
        kernel_features::require()?;
        let l = &config.layout;
        let netns = config.netns.unwrap_or(0);
        let mut loader = EbpfLoader::new();
        for (name, path) in &config.pins {
            // Reuses the map pinned there, or creates it and pins it there.
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .override_global("TP_SKADDR", &l.skaddr, true)
            .override_global("TP_OLDSTATE", &l.oldstate, true)
            .override_global("TP_NEWSTATE", &l.newstate, true)
            .override_global("TP_SPORT", &l.sport, true)
            .override_global("TP_DPORT", &l.dport, true)
            .override_global("TP_FAMILY", &l.family, true)
            .override_global("TP_PROTOCOL", &l.protocol, true)
            .override_global("TP_PROTOCOL_SIZE", &l.protocol_size, true)
            .override_global("TP_SADDR", &l.saddr, true)
            .override_global("TP_DADDR", &l.daddr, true)
            .override_global("TP_SADDR_V6", &l.saddr_v6, true)
            .override_global("TP_DADDR_V6", &l.daddr_v6, true)
            .override_global("NETNS_FILTER", &netns, true)
            .override_global("SK_NET_OFFSET", &config.offsets.sk_net, true)
            .override_global("NET_INUM_OFFSET", &config.offsets.net_inum, true)
            .override_global("SK_ERR_OFFSET", &config.offsets.sk_err, true)
            .override_global("SRTT_OFFSET", &config.offsets.srtt, true)
            .map_max_entries(MAP_SOCKETS, config.max_tracked_sockets)
            .load(OBJECT)
            .map_err(|e| Error::Load(format!("{e:#}")))?;
        let program: &mut TracePoint = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| Error::Load(format!("program {PROGRAM_NAME} missing from object")))?
            .try_into()
            .map_err(|e| Error::Load(format!("{e:#}")))?;
        program
            .load()
            .map_err(|e| Error::Load(format!("verifier: {e:#}")))?;
        program
            .attach(TRACEPOINT_CATEGORY, TRACEPOINT_NAME)
            .map_err(|e| Error::Load(format!("attach: {e:#}")))?;
        let program_id = program
            .info()
            .map_err(|e| Error::Load(format!("program info: {e:#}")))?
            .id();
        Ok(Probe { ebpf, program_id })
    }

    /// Run count, run time and recursion misses of the attached program.
    pub fn program_stats(&self) -> Result<ProgramStats, Error> {
        let program: &TracePoint = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| Error::Load(format!("program {PROGRAM_NAME} missing")))?
            .try_into()
            .map_err(|e| Error::Load(format!("{e:#}")))?;
        let fd = program
            .fd()
            .map_err(|e| Error::Load(format!("program fd: {e:#}")))?;
        prog_stats::read(&fd.as_fd().as_raw_fd()).map_err(|cause| Error::Io {
            what: "reading the program's info".into(),
            cause,
        })
    }

    /// The kernel's id for the attached program (as `bpftool prog show` lists it).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    fn map(&self, name: &str) -> Result<&Map, Error> {
        self.ebpf
            .map(name)
            .ok_or_else(|| Error::Load(format!("map {name} missing from object")))
    }

    fn map_data(&self, name: &str) -> Result<&MapData, Error> {
        match self.map(name)? {
            Map::PerCpuArray(data) | Map::LruHashMap(data) | Map::HashMap(data) => Ok(data),
            _ => Err(Error::Load(format!("map {name} has an unexpected type"))),
        }
    }

    fn read_error(name: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |cause| Error::Io {
            what: format!("reading map {name}"),
            cause,
        }
    }

    fn counters_of(&self, name: &str, slots: u32) -> Result<Vec<u64>, Error> {
        let per_cpu = map_batch::per_cpu_array::<u64>(self.map_data(name)?, slots)
            .map_err(Self::read_error(name))?;
        Ok(per_cpu.iter().map(|v| v.iter().sum()).collect())
    }

    fn histograms_of(&self, name: &str, slots: u32) -> Result<Vec<DwellHistogram>, Error> {
        let per_cpu = map_batch::per_cpu_array::<DwellHistogram>(self.map_data(name)?, slots)
            .map_err(Self::read_error(name))?;
        Ok(per_cpu
            .iter()
            .map(|cpus| {
                let mut total = histogram::empty();
                cpus.iter().for_each(|h| histogram::merge(&mut total, h));
                total
            })
            .collect())
    }

    /// The bookkeeping counters alone, indexed by the `COUNTER_*` constants.
    pub fn counters(&self) -> Result<Vec<u64>, Error> {
        self.counters_of(MAP_COUNTERS, COUNTER_SLOTS)
    }

    /// Reads the aggregate maps, one batch syscall each. Values are summed over CPUs.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(Snapshot {
            transitions: self.counters_of(MAP_TRANSITIONS, TRANSITION_SLOTS)?,
            dwell: self.histograms_of(MAP_DWELL, STATE_SLOTS)?,
            counters: self.counters()?,
            handshakes: self.counters_of(MAP_HANDSHAKES, HANDSHAKE_SLOTS)?,
            handshake_duration: self
                .histograms_of(MAP_HANDSHAKE_DURATION, HANDSHAKE_DURATION_SLOTS)?,
            teardowns: self.counters_of(MAP_TEARDOWNS, TEARDOWN_SLOTS)?,
        })
    }

    /// Entries now in the per-socket map.
    pub fn tracked_sockets(&self) -> Result<u64, Error> {
        let data = self.map_data(MAP_SOCKETS)?;
        map_batch::count_entries(data, size_of::<u64>(), size_of::<SocketEntry>())
            .map_err(Self::read_error(MAP_SOCKETS))
    }

    /// Takes the tail's maps out of the probe: the ring buffer of events and the switch that
    /// turns it on. Call once, before the probe is shared.
    pub fn take_tail_maps(&mut self) -> Result<(RingBuf<MapData>, Array<MapData, u32>), Error> {
        let mut take = |name: &str| {
            self.ebpf
                .take_map(name)
                .ok_or_else(|| Error::Load(format!("map {name} missing from object")))
        };
        let events = take(MAP_EVENTS)?;
        let switch = take(MAP_TAIL_SWITCH)?;
        Ok((
            RingBuf::try_from(events).map_err(|e| Error::Load(format!("{MAP_EVENTS}: {e:#}")))?,
            Array::try_from(switch)
                .map_err(|e| Error::Load(format!("{MAP_TAIL_SWITCH}: {e:#}")))?,
        ))
    }

    /// The (port, slot) assignments in the kernel's port table: empty for a new table, those
    /// of the previous agent for a pinned one.
    pub fn port_slots(&self) -> Result<Vec<(u16, u32)>, Error> {
        let ports: HashMap<&MapData, u16, u32> = HashMap::try_from(self.map(MAP_PORTS)?)
            .map_err(|e| Error::Load(format!("map {MAP_PORTS}: {e:#}")))?;
        ports
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Load(format!("reading map {MAP_PORTS}: {e:#}")))
    }

    /// Gives `port` its own label value: the program counts it in `slot` from now on.
    pub fn set_port_slot(&mut self, port: u16, slot: u32) -> Result<(), Error> {
        let map = self
            .ebpf
            .map_mut(MAP_PORTS)
            .ok_or_else(|| Error::Load(format!("map {MAP_PORTS} missing from object")))?;
        let mut ports: HashMap<&mut MapData, u16, u32> =
            HashMap::try_from(map).map_err(|e| Error::Load(format!("map {MAP_PORTS}: {e:#}")))?;
        ports
            .insert(port, slot, 0)
            .map_err(|e| Error::Load(format!("writing map {MAP_PORTS}: {e:#}")))
    }
}
