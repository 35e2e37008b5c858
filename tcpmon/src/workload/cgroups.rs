//! From a socket's cgroup id to its workload: the id is the inode number of the cgroup's
//! directory under the cgroup2 mount, so a walk of that tree maps ids to paths. Names are kept
//! once found (a cgroup id is never reused while the host runs); an id not known yet makes the
//! agent walk the tree again, at most once a second.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{name, Pods};

/// How often at most an unknown id makes the agent walk the cgroup tree again.
const RESCAN_AT_MOST: Duration = Duration::from_secs(1);
/// Where the kubelet keeps one directory per pod (`NAMESPACE_POD_UID`).
pub const KUBELET_PODS: &str = "/var/log/pods";

#[derive(Debug)]
pub struct Workloads {
    /// The cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts);
    /// `None` if there is none.
    root: Option<PathBuf>,
    pods_dir: PathBuf,
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    names: HashMap<u64, Arc<str>>,
    walked: Option<Instant>,
}

impl Workloads {
    /// Names the cgroups under `root` (by default the cgroup2 mount this process sees).
    pub fn new(root: Option<&Path>, pods_dir: &Path) -> Workloads {
        Workloads {
            root: root.map(Path::to_path_buf).or_else(|| {
                cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
            }),
            pods_dir: pods_dir.to_path_buf(),
            known: Mutex::new(Known::default()),
        }
    }

    /// The workload of cgroup `id`: `None` for 0 (the kernel gave none), `unknown` for a
    /// cgroup that is not in the tree (gone before the agent looked).
    pub fn name(&self, id: u64) -> Option<Arc<str>> {
        if id == 0 {
            return None;
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = known.names.get(&id) {
            return Some(Arc::clone(name));
        }
        if known.walked.is_none_or(|at| at.elapsed() >= RESCAN_AT_MOST) {
            known.walked = Some(Instant::now());
            if let Some(root) = &self.root {
                let pods = Pods::read(&self.pods_dir);
                walk(root, "/", &pods, &mut known.names);
            }
        }
        Some(
            known
                .names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| Arc::from("unknown")),
        )
    }
}

/// Records the workload of `dir` (at `path` under the mount) and of every cgroup below it.
fn walk(dir: &Path, path: &str, pods: &Pods, names: &mut HashMap<u64, Arc<str>>) {
    let Ok(meta) = fs::metadata(dir) else {
        return;
    };
    names
        .entry(meta.ino())
        .or_insert_with(|| Arc::from(name(path, pods)));
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let child = entry.file_name().to_string_lossy().into_owned();
            let child_path = if path == "/" {
                format!("/{child}")
            } else {
                format!("{path}/{child}")
            };
            walk(&entry.path(), &child_path, pods, names);
        }
    }
}

/// The mount point of cgroup2 in `mountinfo` (`/proc/self/mountinfo`): the fifth field of the
/// line whose type, after the " - " separator, is `cgroup2`.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let point = mount.split_whitespace().nth(4)?;
        (fs.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_on_unified_and_hybrid_hosts() {
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        let hybrid = "30 24 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }

    #[test]
    fn maps_directory_inodes_to_workloads() {
        let root = std::env::temp_dir().join(format!("tcpmon-cgroups-{}", std::process::id()));
        let web = root.join("test.slice/web.service");
        fs::create_dir_all(&web).expect("mkdir");
        let mut names = HashMap::new();
        walk(&root, "/", &Pods::default(), &mut names);
        let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
        assert_eq!(names[&ino(&root)].as_ref(), "host");
        assert_eq!(names[&ino(&web)].as_ref(), "web.service");
        assert_eq!(names[&ino(&root.join("test.slice"))].as_ref(), "test.slice");
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
