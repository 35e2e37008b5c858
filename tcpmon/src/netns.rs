//! Network namespaces: finding all of them, and running code inside each.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// One path per network namespace on the host, keyed by inode: every process's
/// `/proc/PID/ns/net`, and the bind mounts of `ip netns` under /run/netns (namespaces without
/// a process).
pub fn all() -> BTreeMap<u64, PathBuf> {
    let mut found = BTreeMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(meta) = fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    };
    if let Ok(entries) = fs::read_dir("/run/netns") {
        entries.flatten().for_each(|e| add(e.path()));
    }
    if let Ok(entries) = fs::read_dir("/proc") {
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .for_each(|e| add(e.path().join("ns/net")));
    }
    found
}

/// Runs `f` inside each namespace in turn, on a thread of its own (setns changes only the
/// calling thread), and returns its results. A path that is not a namespace any more (it
/// vanished, or `/run/netns` holds a file whose mount is gone) is skipped.
pub fn in_each<T: Send>(
    paths: impl IntoIterator<Item = PathBuf> + Send,
    f: impl Fn() -> io::Result<T> + Send,
) -> io::Result<Vec<T>> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let mut results = Vec::new();
                for path in paths {
                    let Ok(file) = File::open(&path) else {
                        continue;
                    };
                    if enter(&file, &path).is_err() {
                        continue;
                    }
                    results.push(f()?);
                }
                Ok(results)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace walker panicked")))
    })
}

fn enter(file: &File, path: &Path) -> io::Result<()> {
    // SAFETY: setns on the calling (walker) thread with an open nsfs descriptor.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let cause = io::Error::last_os_error();
        return Err(io::Error::new(
            cause.kind(),
            format!("entering {}: {cause}", path.display()),
        ));
    }
    Ok(())
}
