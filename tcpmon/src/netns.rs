//! Network namespaces: finding all of them, and running code inside each.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
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

/// Runs `f` inside each namespace, on worker threads of their own (setns changes only the
/// calling thread; one worker per CPU, since every socket dump walks the host's whole
/// established hash), and returns its results in the order of `paths`. A path that is not a
/// namespace any more (it vanished, or `/run/netns` holds a file whose mount is gone) is
/// skipped.
pub fn in_each<T: Send>(
    paths: Vec<PathBuf>,
    f: impl Fn() -> io::Result<T> + Sync,
) -> io::Result<Vec<T>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, paths.len().max(1));
    let next = AtomicUsize::new(0);
    let work = || -> io::Result<Vec<(usize, T)>> {
        let mut results = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(index) else {
                return Ok(results);
            };
            let Ok(file) = File::open(path) else {
                continue;
            };
            if enter(&file, path).is_ok() {
                results.push((index, f()?));
            }
        }
    };
    let mut all = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
        let mut all = Vec::new();
        for handle in handles {
            let results = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("namespace walker panicked")))?;
            all.extend(results);
        }
        Ok::<_, io::Error>(all)
    })?;
    all.sort_by_key(|(index, _)| *index);
    Ok(all.into_iter().map(|(_, result)| result).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_every_namespace_and_skips_vanished_ones() {
        // setns needs CAP_SYS_ADMIN: the suite runs as root.
        let own = PathBuf::from("/proc/self/ns/net");
        let paths = vec![
            own.clone(),
            PathBuf::from("/run/netns/tcpmon-no-such-namespace"),
            own.clone(),
            own,
        ];
        let calls = AtomicUsize::new(0);
        let results = in_each(paths, || Ok(calls.fetch_add(1, Ordering::SeqCst))).expect("runs");
        assert_eq!(results.len(), 3, "the missing namespace is skipped");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let failed = in_each(vec![PathBuf::from("/proc/self/ns/net")], || {
            Err::<(), _>(io::Error::other("boom"))
        });
        assert_eq!(failed.expect_err("propagates").to_string(), "boom");
    }
}
