//! Without --netns the agent counts sockets in every network namespace: those with a process
//! in them and those only bind-mounted under /run/netns.

use std::{os::unix::fs::MetadataExt, process::Command, time::Duration};

use crate::support::{require_root, NetNs};

/// A process in a network namespace of its own, with no bind mount; killed on drop.
struct Unshared(std::process::Child);

impl Drop for Unshared {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_namespace_is_found() {
    require_root();
    let named = NetNs::new();
    let process = Unshared(
        Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .spawn()
            .expect("unshare"),
    );
    let ns_of_process = format!("/proc/{}/ns/net", process.0.id());
    let inode = |path: &str| std::fs::metadata(path).expect("ns file").ino();
    // unshare enters the new namespace just after it starts: wait until it has.
    let host = inode("/proc/self/ns/net");
    for _ in 0..100 {
        if inode(&ns_of_process) != host {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = tcpmon::netns::all();
    for path in [named.path(), ns_of_process, "/proc/self/ns/net".to_string()] {
        assert!(all.contains_key(&inode(&path)), "{path} not found");
    }
    let unique: std::collections::BTreeSet<_> = all.values().collect();
    assert_eq!(unique.len(), all.len(), "one path per namespace");
}
