//! `--pin DIR`: the counting maps live in a BPF filesystem directory, so a restart or an upgrade
//! of the agent continues every counter instead of starting from zero.
//!
//! Pinned: the aggregate maps (transitions, dwell and handshake-time histograms, handshakes,
//! handshake retransmissions, teardowns, bookkeeping counters), the per-socket map (sockets open across the restart keep
//! their entry, so their dwell times are measured) and the port table (counts per port slot
//! keep their `port` label). Not pinned: the program itself, its link and the tail's maps, so a
//! stopped agent counts nothing and leaves no program attached. Transitions made while no agent
//! runs are not seen.
//!
//! A pinned map is reused only if its type, key and value sizes and capacity are what this agent
//! would create; otherwise the agent stops with one line naming the difference.
use std::{
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use tcpmon_common::{
    counter, handshake, maps, port, reset, tcp_state, workload, DwellHistogram, SocketEntry,
    TRANSITION_SLOTS,
};

use crate::error::Error;

/// `statfs.f_type` of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What a map is, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapShape {
    pub name: &'static str,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// The maps kept across restarts, shaped as this build creates them.
pub fn pinned_maps(max_tracked_sockets: u32) -> [MapShape; 10] {
    let counters = |name, slots| MapShape {
        name,
        kind: MapType::PerCpuArray,
        key_size: 4,
        value_size: 8,
        max_entries: maps::ROWS * slots,
    };
    let histograms = |name, slots| MapShape {
        name,
        kind: MapType::PerCpuArray,
        key_size: 4,
        value_size: size_of::<DwellHistogram>() as u32,
        max_entries: maps::ROWS * slots,
    };
    [
        counters(maps::TRANSITIONS, TRANSITION_SLOTS),
        histograms(maps::DWELL, tcp_state::SLOTS),
        counters(maps::COUNTERS, counter::SLOTS),
        histograms(maps::HANDSHAKE_DURATION, handshake::SIDE_SLOTS),
        counters(maps::HANDSHAKE_RETRANSMITS, handshake::SIDE_SLOTS),
        counters(maps::WORKLOAD_UNCOUNTED, workload::UNCOUNTED_SLOTS),
        MapShape {
            name: maps::SOCKETS,
            kind: MapType::LruHash,
            key_size: 8,
            value_size: size_of::<SocketEntry>() as u32,
            max_entries: max_tracked_sockets,
        },
        MapShape {
            name: maps::PORTS,
            kind: MapType::Hash,
            key_size: 2,
            value_size: 4,
            max_entries: port::SLOTS,
        },
        MapShape {
            name: maps::RESETS,
            kind: MapType::Hash,
            key_size: size_of::<reset::Key>() as u32,
            value_size: 8,
            max_entries: reset::MAX_SERIES,
        },
        MapShape {
            name: maps::WORKLOADS,
            kind: MapType::Hash,
            key_size: size_of::<workload::Key>() as u32,
            value_size: 8,
            max_entries: workload::MAX_SERIES,
        },
    ]
}

/// Makes `dir` (mode 0700) on a BPF filesystem and checks the maps already pinned in it;
/// returns the pin path of each map for the loader.
pub fn prepare(
    dir: &Path,
    max_tracked_sockets: u32,
) -> Result<Vec<(&'static str, PathBuf)>, Error> {
    let refuse = |reason: String| Error::PinDir {
        path: dir.display().to_string(),
        reason,
    };
    // The nearest existing ancestor tells the filesystem the directory would be made on.
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if !on_bpf_fs(existing).map_err(|e| refuse(e.to_string()))? {
        return Err(refuse(
            "not on a BPF filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`".into(),
        ));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| refuse(e.to_string()))?;
    pinned_maps(max_tracked_sockets)
        .into_iter()
        .map(|want| {
            let path = dir.join(want.name);
            if path.exists() {
                check(&path, &want)?;
            }
            Ok((want.name, path))
        })
        .collect()
}

fn on_bpf_fs(dir: &Path) -> std::io::Result<bool> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: a zeroed statfs is a valid out-parameter; `path` is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` a live out-parameter of the right type.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Fails unless the map pinned at `path` has the shape `want`.
fn check(path: &Path, want: &MapShape) -> Result<(), Error> {
    let mismatch = |reason: String| Error::PinMismatch {
        path: path.display().to_string(),
        reason,
    };
    let info = MapInfo::from_pin(path).map_err(|e| mismatch(format!("not a map: {e}")))?;
    let kind = info.map_type().map_err(|e| mismatch(e.to_string()))?;
    let found = MapShape {
        name: want.name,
        kind,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    };
    describe_difference(&found, want).map_or(Ok(()), |reason| Err(mismatch(reason)))
}

/// How `found` differs from `want`, in words, or `None` if it does not.
pub fn describe_difference(found: &MapShape, want: &MapShape) -> Option<String> {
    if found.kind != want.kind {
        return Some(format!("type {:?}, expected {:?}", found.kind, want.kind));
    }
    if (found.key_size, found.value_size) != (want.key_size, want.value_size) {
        return Some(format!(
            "key/value size {}/{} bytes, expected {}/{}: made by another tcpmon version",
            found.key_size, found.value_size, want.key_size, want.value_size
        ));
    }
    if found.max_entries != want.max_entries {
        let hint = if want.name == maps::SOCKETS {
            " (--max-tracked-sockets)"
        } else {
            ": made by another tcpmon version"
        };
        return Some(format!(
            "{} entries, expected {}{hint}",
            found.max_entries, want.max_entries
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let want = pinned_maps(1024)[6];
        assert_eq!(want.name, maps::SOCKETS);
        assert_eq!(describe_difference(&want, &want), None);
        let smaller = MapShape {
            max_entries: 512,
            ..want
        };
        assert_eq!(
            describe_difference(&smaller, &want).as_deref(),
            Some("512 entries, expected 1024 (--max-tracked-sockets)")
        );
        let older = MapShape {
            value_size: 32,
            ..want
        };
        assert_eq!(
            describe_difference(&older, &want).as_deref(),
            Some("key/value size 8/32 bytes, expected 8/40: made by another tcpmon version")
        );
        let other = MapShape {
            kind: MapType::Hash,
            ..want
        };
        assert!(describe_difference(&other, &want)
            .expect("differs")
            .starts_with("type Hash,"));
    }

    #[test]
    fn a_directory_outside_bpffs_is_refused() {
        let dir = std::env::temp_dir().join(format!("tcpmon-pin-test-{}", std::process::id()));
        let err = prepare(&dir, 1024).expect_err("tmp is not bpffs");
        assert!(!dir.exists(), "nothing is made outside bpffs");
        assert!(err.to_string().contains("not on a BPF filesystem"), "{err}");
    }
}
