//! A cgroup v2 hierarchy of a test's own: a slice under the machine's cgroup2 mount with the
//! units (cgroups) the test asks for, and a `/var/log/pods`-shaped directory for pod names;
//! all removed on drop. Where nothing mounts cgroup2 (the kernel matrix's guests), the first
//! hierarchy mounts it in a temporary directory and the last one to go unmounts it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use super::NetNs;

/// The cgroup2 mount this process made, and how many hierarchies use it.
static OWN_MOUNT: Mutex<(u32, Option<PathBuf>)> = Mutex::new((0, None));

pub struct Cgroups {
    /// `tcpmon-test-PID-N.slice` under the cgroup2 mount.
    pub slice: PathBuf,
    /// The kubelet-shaped pod directory (`--kubelet-pods`).
    pub pods: PathBuf,
    units: Vec<String>,
}

impl Cgroups {
    /// A slice holding a cgroup for each of `units` (`web.service`, a pod's slice, ...).
    pub fn create(units: &[&str]) -> Cgroups {
        let mount = mount_point();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let slice = mount.join(format!("tcpmon-test-{unique}.slice"));
        for unit in units {
            fs::create_dir_all(slice.join(unit)).expect("create a cgroup");
        }
        let pods = std::env::temp_dir().join(format!("tcpmon-test-pods-{unique}"));
        fs::create_dir_all(&pods).expect("create the pods directory");
        Cgroups {
            slice,
            pods,
            units: units.iter().map(|u| u.to_string()).collect(),
        }
    }

    /// Adds a cgroup for `unit` now (removed on drop with the others).
    pub fn add_unit(&mut self, unit: &str) {
        fs::create_dir_all(self.slice.join(unit)).expect("create a cgroup");
        self.units.push(unit.to_string());
    }

    /// Removes the cgroup of `unit` now, once its processes have gone.
    pub fn remove_unit(&self, unit: &str) {
        remove_when_empty(&self.slice.join(unit));
        assert!(
            !self.unit(unit).exists(),
            "the cgroup of {unit} is still there"
        );
    }

    /// The cgroup of `unit`.
    pub fn unit(&self, unit: &str) -> PathBuf {
        self.slice.join(unit)
    }

    /// Runs `script` with python3 in `ns`, as a process of cgroup `unit` (joined before
    /// `ip netns exec`, which remounts /sys), stdin and stdout piped.
    pub fn python_in(&self, unit: &str, ns: &NetNs, script: &str) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec ip netns exec {} python3 -c \"$0\"",
                self.unit(unit).display(),
                ns.name
            ))
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3")
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.pods);
        let dirs = self.units.iter().map(|u| self.slice.join(u));
        for dir in dirs.chain([self.slice.clone()]) {
            remove_when_empty(&dir);
        }
        let mut own = OWN_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
        if let (1, Some(point)) = (own.0, own.1.take()) {
            umount(&point);
        }
        own.0 = own.0.saturating_sub(1);
    }
}

/// Removes the cgroup `dir`: it goes once its processes have, and they exit within moments
/// of the test.
fn remove_when_empty(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cgroup2 mount the agent will find: the machine's, or one this process makes.
fn mount_point() -> PathBuf {
    let mut own = OWN_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    own.0 += 1;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    if let Some(point) = tcpmon::workload::cgroups::cgroup2_mount(&mountinfo) {
        return point;
    }
    let point = std::env::temp_dir().join(format!("tcpmon-test-cgroup2-{}", std::process::id()));
    fs::create_dir_all(&point).expect("create a mount point");
    let status = Command::new("mount")
        .args(["-t", "cgroup2", "none"])
        .arg(&point)
        .status()
        .expect("run mount");
    assert!(status.success(), "mount -t cgroup2 failed: {status}");
    own.1 = Some(point.clone());
    point
}

fn umount(point: &Path) {
    let _ = Command::new("umount").arg(point).status();
    let _ = fs::remove_dir(point);
}
