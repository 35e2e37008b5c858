//! Loading the eBPF program with this kernel's offsets, attaching it, and reading its maps.
use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use tcpmon_common::{
    DwellHistogram, COUNTER_SLOTS, MAP_COUNTERS, MAP_DWELL, MAP_SOCKETS, MAP_TRANSITIONS,
    PROGRAM_NAME, STATE_SLOTS, TRANSITION_SLOTS,
};

use crate::{
    btf::{Btf, VMLINUX_BTF},
    error::Error,
    histogram, map_batch,
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
        })
    }
}

/// Everything the program is configured with at load time.
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    pub layout: TracepointLayout,
    pub offsets: KernelOffsets,
    /// Inode of the only network namespace to count; `None` counts all of them.
    pub netns: Option<u32>,
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
}

impl Probe {
    pub fn load(config: &ProbeConfig) -> Result<Probe, Error> {
        let l = &config.layout;
        let netns = config.netns.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .override_global("TP_SKADDR", &l.skaddr, true)
            .override_global("TP_OLDSTATE", &l.oldstate, true)
            .override_global("TP_NEWSTATE", &l.newstate, true)
            .override_global("TP_FAMILY", &l.family, true)
            .override_global("TP_PROTOCOL", &l.protocol, true)
            .override_global("TP_PROTOCOL_SIZE", &l.protocol_size, true)
            .override_global("NETNS_FILTER", &netns, true)
            .override_global("SK_NET_OFFSET", &config.offsets.sk_net, true)
            .override_global("NET_INUM_OFFSET", &config.offsets.net_inum, true)
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

    /// The kernel's id for the attached program (as `bpftool prog show` lists it).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    fn map(&self, name: &str) -> Result<&Map, Error> {
        self.ebpf
            .map(name)
            .ok_or_else(|| Error::Load(format!("map {name} missing from object")))
    }

    fn read_per_cpu<T: aya::Pod>(&self, name: &str, slots: u32) -> Result<Vec<Vec<T>>, Error> {
        let array: PerCpuArray<&MapData, T> = PerCpuArray::try_from(self.map(name)?)
            .map_err(|e| Error::Load(format!("map {name}: {e:#}")))?;
        (0..slots)
            .map(|i| {
                array
                    .get(&i, 0)
                    .map(|values| values.to_vec())
                    .map_err(|e| Error::Load(format!("reading map {name}: {e:#}")))
            })
            .collect()
    }

    fn read_counters(&self, name: &str, slots: u32) -> Result<Vec<u64>, Error> {
        let per_cpu = self.read_per_cpu::<u64>(name, slots)?;
        Ok(per_cpu.iter().map(|v| v.iter().sum()).collect())
    }

    /// The bookkeeping counters alone, indexed by the `COUNTER_*` constants.
    pub fn counters(&self) -> Result<Vec<u64>, Error> {
        self.read_counters(MAP_COUNTERS, COUNTER_SLOTS)
    }

    /// Reads the aggregate maps. Values are summed over CPUs.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        let transitions = self.read_counters(MAP_TRANSITIONS, TRANSITION_SLOTS)?;
        let counters = self.counters()?;
        let dwell = self
            .read_per_cpu::<DwellHistogram>(MAP_DWELL, STATE_SLOTS)?
            .iter()
            .map(|per_cpu| {
                let mut total = histogram::empty();
                per_cpu.iter().for_each(|h| histogram::merge(&mut total, h));
                total
            })
            .collect();
        Ok(Snapshot {
            transitions,
            dwell,
            counters,
        })
    }

    /// Entries now in the per-socket map.
    pub fn tracked_sockets(&self) -> Result<u64, Error> {
        let Map::LruHashMap(data) = self.map(MAP_SOCKETS)? else {
            return Err(Error::Load(format!("map {MAP_SOCKETS} is not an LRU hash")));
        };
        map_batch::count_entries(data).map_err(|cause| Error::Io {
            what: format!("counting entries of map {MAP_SOCKETS}"),
            cause,
        })
    }
}
