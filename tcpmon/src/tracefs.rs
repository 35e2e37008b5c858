//! tracefs: making sure it is mounted, and reading the tracepoint's field layout from its
//! format file so the eBPF program never hard-codes an offset.
use std::{ffi::CString, fs, io, path::Path};

use tcpmon_common::RECORD_BYTES;

use crate::error::Error;

/// Where tracefs lives on current kernels, and where aya looks for it first.
pub const TRACEFS_PATH: &str = "/sys/kernel/tracing";
pub const TRACEPOINT_CATEGORY: &str = "sock";
pub const TRACEPOINT_NAME: &str = "inet_sock_set_state";

/// Byte offsets of the fields the program reads, as this kernel lays out the tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointLayout {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    /// Address fields, read only for tail events.
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    /// 1 before Linux 5.6 (`__u8 protocol`), 2 since (`__u16 protocol`).
    pub protocol_size: u32,
}

/// Mounts tracefs at [`TRACEFS_PATH`] unless it is already mounted there.
pub fn ensure_mounted() -> Result<(), Error> {
    if Path::new(TRACEFS_PATH).join("events").is_dir() {
        return Ok(());
    }
    let target = CString::new(TRACEFS_PATH).expect("constant path has no NUL");
    let fstype = CString::new("tracefs").expect("constant has no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let cause = io::Error::last_os_error();
    // Another process (another agent) may have mounted it meanwhile: the kernel then answers
    // EBUSY, and tracefs is there all the same.
    if Path::new(TRACEFS_PATH).join("events").is_dir() {
        return Ok(());
    }
    Err(Error::TracefsMount {
        path: TRACEFS_PATH,
        cause,
    })
}

/// Reads and parses the format file of `sock:inet_sock_set_state`.
pub fn read_layout() -> Result<TracepointLayout, Error> {
    let path = format!("{TRACEFS_PATH}/events/{TRACEPOINT_CATEGORY}/{TRACEPOINT_NAME}/format");
    let text = fs::read_to_string(&path).map_err(|cause| match cause.kind() {
        io::ErrorKind::NotFound => Error::TracepointMissing { path: path.clone() },
        _ => Error::Io {
            what: format!("cannot read {path}"),
            cause,
        },
    })?;
    parse_layout(&text).map_err(|reason| Error::TracepointFormat { path, reason })
}

/// Parses a tracefs format file. Pure, so it is tested against other kernels' layouts.
pub fn parse_layout(format: &str) -> Result<TracepointLayout, String> {
    let field = |name: &str| -> Result<(u32, u32), String> {
        find_field(format, name).ok_or_else(|| format!("field `{name}` not found"))
    };
    let (skaddr, skaddr_size) = field("skaddr")?;
    let (oldstate, old_size) = field("oldstate")?;
    let (newstate, new_size) = field("newstate")?;
    let (sport, sport_size) = field("sport")?;
    let (dport, dport_size) = field("dport")?;
    let (family, family_size) = field("family")?;
    let (protocol, protocol_size) = field("protocol")?;
    let (saddr, saddr_size) = field("saddr")?;
    let (daddr, daddr_size) = field("daddr")?;
    let (saddr_v6, saddr_v6_size) = field("saddr_v6")?;
    let (daddr_v6, daddr_v6_size) = field("daddr_v6")?;
    let address_sizes = [
        (saddr_size, 4),
        (daddr_size, 4),
        (saddr_v6_size, 16),
        (daddr_v6_size, 16),
    ];
    if let Some((size, want)) = address_sizes.iter().find(|(size, want)| size != want) {
        return Err(format!("an address field has size {size}, expected {want}"));
    }
    // The program copies the first RECORD_BYTES of the record and reads fields from the copy
    // with aligned loads: each field must fit and be naturally aligned.
    let expect = |name: &str, offset: u32, size: u32, allowed: &[u32]| {
        if !allowed.contains(&size) {
            Err(format!(
                "field `{name}` has size {size}, expected {allowed:?}"
            ))
        } else if (offset + size) as usize > RECORD_BYTES {
            Err(format!("field `{name}` ends past byte {RECORD_BYTES}"))
        } else if !offset.is_multiple_of(size) {
            Err(format!("field `{name}` at offset {offset} is not aligned"))
        } else {
            Ok(())
        }
    };
    expect("skaddr", skaddr, skaddr_size, &[8])?;
    expect("oldstate", oldstate, old_size, &[4])?;
    expect("newstate", newstate, new_size, &[4])?;
    expect("sport", sport, sport_size, &[2])?;
    expect("dport", dport, dport_size, &[2])?;
    expect("family", family, family_size, &[2])?;
    expect("protocol", protocol, protocol_size, &[1, 2])?;
    Ok(TracepointLayout {
        skaddr,
        oldstate,
        newstate,
        sport,
        dport,
        family,
        protocol,
        protocol_size,
        saddr,
        daddr,
        saddr_v6,
        daddr_v6,
    })
}

/// Finds `field:<type> <name>;\toffset:N;\tsize:M;` and returns (N, M).
fn find_field(format: &str, name: &str) -> Option<(u32, u32)> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        let declared = declaration.rsplit([' ', '*']).next()?.split('[').next()?;
        if declared != name {
            return None;
        }
        let mut offset = None;
        let mut size = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        Some((offset?, size?))
    })
}

#[cfg(test)]
#[path = "tracefs_tests.rs"]
mod tests;
