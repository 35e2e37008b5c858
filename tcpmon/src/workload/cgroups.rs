//! From a socket's cgroup id to its workload: the id is the inode number of the cgroup's
//! directory under the cgroup2 mount, so a walk of that tree maps ids to paths.
//!
//! What is kept stays bounded by the node, not by its history: the names of the cgroups present
//! at the last walk (a cgroup that is gone drops out at the next one), and a negative cache of
//! ids no walk found. An id is looked up by a walk only once: a walk that began after the id
//! was first asked for and did not find it means the cgroup was gone before the agent looked
//! (cgroup ids are never reused while the host runs), so the id is `unknown` from then on and
//! never walked for again. Walks run one at a time and never on the async runtime's threads:
//! [`Workloads::name_off_runtime`] answers from the cache at once and walks on a blocking
//! thread.
use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{name, Pods, UNKNOWN};

/// Where the kubelet keeps one directory per pod (`NAMESPACE_POD_UID`).
pub const KUBELET_PODS: &str = "/var/log/pods";
/// Ids no walk found that are remembered: beyond it the negative cache starts again (each id is
/// then walked for once more), so a host that churns cgroups cannot grow it without bound.
const MAX_GONE: usize = 65_536;

#[derive(Debug)]
pub struct Workloads {
    /// The cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts);
    /// `None` if there is none.
    root: Option<PathBuf>,
    pods_dir: PathBuf,
    known: Mutex<Known>,
    /// Held for the length of a walk: one at a time, and a caller that missed waits for the
    /// walk in progress before deciding whether it needs one of its own.
    walking: Mutex<()>,
}

#[derive(Debug, Default)]
struct Known {
    /// The cgroups present at the last walk.
    names: HashMap<u64, Arc<str>>,
    /// Ids a walk that began after they were asked for did not find.
    gone: HashSet<u64>,
    /// Walks begun so far.
    walks: u64,
}

impl Known {
    /// The answer for `id` without a walk, if there is one.
    fn answer(&self, id: u64) -> Option<Arc<str>> {
        if let Some(name) = self.names.get(&id) {
            return Some(Arc::clone(name));
        }
        self.gone.contains(&id).then(|| Arc::from(UNKNOWN))
    }

    fn note_gone(&mut self, id: u64) {
        if self.gone.len() >= MAX_GONE {
            self.gone.clear();
        }
        self.gone.insert(id);
    }
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
            walking: Mutex::new(()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workload of cgroup `id` if it is known without a walk: `Some(None)` for 0 (the
    /// kernel gave none), `None` if only a walk can tell.
    pub fn cached(&self, id: u64) -> Option<Option<Arc<str>>> {
        if id == 0 {
            return Some(None);
        }
        self.known().answer(id).map(Some)
    }

    /// The workload of cgroup `id`: `None` for 0 (the kernel gave none), `unknown` for a
    /// cgroup that is not in the tree (gone before the agent looked). Blocking: it may walk
    /// the cgroup tree.
    pub fn name(&self, id: u64) -> Option<Arc<str>> {
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let asked_after = self.known().walks;
        let _walking = self.walking.lock().unwrap_or_else(|e| e.into_inner());
        let mut known = self.known();
        if let Some(name) = known.answer(id) {
            return Some(name);
        }
        if known.walks == asked_after {
            // No walk began since the id was asked for: one that does now is conclusive.
            known.walks += 1;
            drop(known);
            let mut names = HashMap::new();
            if let Some(root) = &self.root {
                walk(root, "/", &Pods::read(&self.pods_dir), &mut names);
            }
            known = self.known();
            known.names = names;
            if let Some(name) = known.answer(id) {
                return Some(name);
            }
        }
        known.note_gone(id);
        Some(Arc::from(UNKNOWN))
    }

    /// As [`Workloads::name`], for async code: a cached answer at once, a walk on a blocking
    /// thread (never on the runtime's).
    pub async fn name_off_runtime(self: &Arc<Self>, id: u64) -> Option<Arc<str>> {
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let workloads = Arc::clone(self);
        tokio::task::spawn_blocking(move || workloads.name(id))
            .await
            .unwrap_or_else(|_| Some(Arc::from(UNKNOWN)))
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

    #[test]
    fn walks_once_per_new_id_forgets_gone_cgroups_and_remembers_what_no_walk_found() {
        let root = std::env::temp_dir().join(format!("tcpmon-cache-{}", std::process::id()));
        let (web, db) = (root.join("web.service"), root.join("db.service"));
        fs::create_dir_all(&web).expect("mkdir");
        let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
        let workloads = Workloads::new(Some(&root), Path::new("/nonexistent"));
        let walks = || workloads.known().walks;
        let web_id = ino(&web);
        assert_eq!(
            workloads.cached(web_id),
            None,
            "nothing is known before a walk"
        );
        assert_eq!(workloads.name(web_id).as_deref(), Some("web.service"));
        assert_eq!(walks(), 1);
        assert_eq!(workloads.name(web_id).as_deref(), Some("web.service"));
        assert_eq!(walks(), 1, "a known id needs no walk");
        // An id no walk can find is unknown, and asking again walks no more.
        let never = u64::MAX - 1;
        assert_eq!(workloads.name(never).as_deref(), Some(UNKNOWN));
        assert_eq!(walks(), 2);
        assert_eq!(workloads.name(never).as_deref(), Some(UNKNOWN));
        assert_eq!(workloads.cached(never), Some(Some(Arc::from(UNKNOWN))));
        assert_eq!(walks(), 2);
        // A cgroup that is gone drops out at the next walk; a new one is found by it.
        // (db made first: an ordinary file system may give a new directory the inode number
        // of one just removed, where cgroup ids are never reused.)
        fs::create_dir(&db).expect("mkdir");
        fs::remove_dir(&web).expect("rmdir");
        assert_eq!(workloads.name(ino(&db)).as_deref(), Some("db.service"));
        assert_eq!(walks(), 3);
        assert_eq!(
            workloads.cached(web_id),
            None,
            "the gone cgroup is forgotten"
        );
        assert_eq!(workloads.cached(0), Some(None), "0 is no cgroup");
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
