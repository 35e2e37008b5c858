//! Least privilege: once the program is loaded and attached and every socket is bound, the agent
//! keeps only the capabilities its scrapes use, and optionally becomes an unprivileged user.
//!
//! What a running agent still does, and what that needs:
//! - reading and writing its maps, reading its program's stats, polling the ring buffer: file
//!   descriptors it already holds; no capability;
//! - counting sockets with NETLINK_SOCK_DIAG: none;
//! - entering other network namespaces (`setns`) to count their sockets: CAP_SYS_ADMIN;
//! - opening `/proc/PID/ns/net` of processes owned by other users to find those namespaces:
//!   CAP_SYS_PTRACE (read-only ptrace access check), needed once the agent is not root.
//!
//! Everything else (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_DAC_OVERRIDE, ...) is dropped from
//! the effective, permitted, inheritable, ambient and bounding sets, and `no_new_privs` is set,
//! so nothing the agent executes could regain them.
use std::{ffi::CString, fs, io};

use crate::error::Error;

pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;

/// The capabilities a running agent keeps.
pub const RUNTIME: &[u32] = &[CAP_SYS_PTRACE, CAP_SYS_ADMIN];

/// The mask of `caps`, as `/proc/PID/status` prints it.
pub fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |mask, cap| mask | 1 << cap)
}

/// A user to run as, resolved at start so a typo fails before anything is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

impl User {
    pub fn lookup(name: &str) -> Result<User, Error> {
        let unknown = || Error::UnknownUser { name: name.into() };
        let c_name = CString::new(name).map_err(|_| unknown())?;
        // SAFETY: zeroed passwd is a valid out-parameter; `buf` outlives the call and the
        // strings it points into are not used after it.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found = std::ptr::null_mut();
        // SAFETY: every pointer is to a live local (`c_name` is NUL-terminated, `buf` has the
        // length passed); nothing `pw` points into is used once `buf` is dropped.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc != 0 || found.is_null() {
            return Err(unknown());
        }
        Ok(User {
            name: name.into(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        })
    }
}

/// Drops every capability but [`RUNTIME`] and, with `user`, switches to that user and group
/// (no supplementary groups) keeping [`RUNTIME`].
pub fn drop_privileges(user: Option<&User>) -> Result<(), Error> {
    let last_cap: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        for cap in (0..=last_cap).filter(|cap| !RUNTIME.contains(cap)) {
            // EINVAL for a capability this kernel does not know: nothing to drop.
            libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
        }
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clearing ambient capabilities",
        )?;
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "setting no_new_privs",
        )?;
    }
    if let Some(user) = user {
        // The switch uses CAP_SETUID and CAP_SETGID, still effective here. PR_SET_KEEPCAPS keeps
        // the permitted set across setuid; the effective set it clears is raised again below.
        // SAFETY: plain syscalls with integer arguments; setgroups gets an empty list.
        unsafe {
            check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
            check(libc::setgid(user.gid), "setgid")?;
            check(
                libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
                "keeping capabilities across setuid",
            )?;
            check(libc::setuid(user.uid), "setuid")?;
        }
    }
    set(RUNTIME).map_err(|cause| Error::Io {
        what: "dropping privileges: capset".into(),
        cause,
    })
}

/// Turns a failed syscall's return code into an error naming `what`.
fn check(rc: libc::c_int, what: &str) -> Result<(), Error> {
    if rc == 0 {
        return Ok(());
    }
    Err(Error::Io {
        what: format!("dropping privileges: {what}"),
        cause: io::Error::last_os_error(),
    })
}

/// Sets the effective and permitted sets to `caps` (those of them the process has: a container
/// may grant fewer) and the inheritable set to nothing.
fn set(caps: &[u32]) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let status = fs::read_to_string("/proc/self/status")?;
    let permitted = status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let mask = mask(caps) & permitted;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let halves = [mask as u32, (mask >> 32) as u32];
    let data = halves.map(|half| Data {
        effective: half,
        permitted: half,
        inheritable: 0,
    });
    // SAFETY: version 3 takes a header and two data structs, laid out as the kernel expects.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_mask_is_sys_ptrace_and_sys_admin() {
        assert_eq!(mask(RUNTIME), 0x28_0000);
    }

    #[test]
    fn users_are_resolved() {
        let root = User::lookup("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(matches!(
            User::lookup("no-such-user-tcpmon"),
            Err(Error::UnknownUser { .. })
        ));
    }
}
