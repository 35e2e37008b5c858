//! The kernels of the matrix: Debian's generic-flavour kernel packages (`linux-image-*-amd64`;
//! the `-cloud-` flavour has no 9p, which virtme-ng needs), downloaded once and unpacked into a
//! cache outside the repository.
//!
//! Each Debian suite gets its own apt sources list, package lists and archive directory under
//! the cache, so the machine's apt configuration and state stay untouched. The package is
//! unpacked with `dpkg -x` (not installed) and its modules get a `modules.dep` (Debian ships
//! none); virtme-ng finds them next to the kernel image and links them into the guest's
//! `/lib/modules`, so the host's `/lib/modules` is not touched either.
use std::{
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

/// Where kernels are cached, unless `TCPMON_VM_CACHE` says otherwise. Outside `target/` so
/// that `cargo clean` and fresh clones keep them; shared by every checkout on the machine
/// (a lock file serialises downloads).
pub const DEFAULT_CACHE: &str = "/var/cache/tcpmon/vm";

/// The matrix: (version users know, Debian suite). The newest kernel of each suite is taken.
pub const KERNELS: [(&str, &str); 3] = [
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
];

/// One unpacked kernel.
#[derive(Debug)]
pub struct Kernel {
    /// As asked for: `5.10`, `6.1`, `6.12`.
    pub version: String,
    pub suite: String,
    /// Its `uname -r`, e.g. `5.10.0-46-amd64`.
    pub release: String,
    pub image: PathBuf,
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("TCPMON_VM_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// The suite of `version` (or of a suite name), if it is one of the matrix.
pub fn suite_of(version: &str) -> Option<(&'static str, &'static str)> {
    KERNELS
        .into_iter()
        .find(|(v, suite)| *v == version || *suite == version)
}

/// The cached kernel of `suite`, downloaded and unpacked first if it is not there yet.
pub fn ensure(version: &str, suite: &str) -> anyhow::Result<Kernel> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let _lock = lock(&cache.join(".lock"))?;
    let root = cache.join(format!("root-{suite}"));
    if find_image(&root).is_none() {
        download(&cache, suite, &root)?;
    }
    let (image, release) = find_image(&root).context("no kernel image in the package")?;
    Ok(Kernel {
        version: version.to_string(),
        suite: suite.to_string(),
        release,
        image,
    })
}

/// `boot/vmlinuz-RELEASE` under `root`, with RELEASE.
fn find_image(root: &Path) -> Option<(PathBuf, String)> {
    fs::read_dir(root.join("boot"))
        .ok()?
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some((entry.path(), release))
        })
}

/// apt update on the suite's own lists, apt download of the package the `linux-image-amd64`
/// metapackage points at, dpkg -x into a scratch directory, depmod, then a rename into place
/// (so an interrupted run never leaves a half-unpacked kernel behind).
fn download(cache: &Path, suite: &str, root: &Path) -> anyhow::Result<()> {
    let apt = cache.join(format!("apt-{suite}"));
    fs::create_dir_all(apt.join("lists/partial"))?;
    fs::create_dir_all(apt.join("archives/partial"))?;
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let sources = format!(
        "deb [signed-by={keyring}] http://deb.debian.org/debian {suite} main\n\
         deb [signed-by={keyring}] http://deb.debian.org/debian-security {suite}-security main\n"
    );
    fs::write(apt.join("sources.list"), sources)?;
    let options: Vec<String> = [
        format!(
            "Dir::Etc::sourcelist={}",
            apt.join("sources.list").display()
        ),
        "Dir::Etc::sourceparts=-".to_string(),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.display()),
        "Dir::State::status=/dev/null".to_string(),
        "APT::Architecture=amd64".to_string(),
        "APT::Sandbox::User=root".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect();
    let apt_get = |args: &[&str]| -> anyhow::Result<String> {
        let mut command = Command::new(args[0]);
        command.args(&options).args(&args[1..]).current_dir(&apt);
        output(&mut command)
    };
    eprintln!(
        "xtask: downloading Debian {suite}'s kernel into {}",
        cache.display()
    );
    apt_get(&["apt-get", "-q", "update"])?;
    let depends = apt_get(&["apt-cache", "depends", "linux-image-amd64"])?;
    let package = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .map(|rest| format!("linux-image-{rest}"))
        .with_context(|| format!("no kernel package behind linux-image-amd64 in {suite}"))?;
    apt_get(&["apt-get", "-q", "download", &package])?;
    let deb = fs::read_dir(&apt)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let scratch = cache.join(format!("unpack-{suite}"));
    let _ = fs::remove_dir_all(&scratch);
    output(Command::new("dpkg").arg("-x").arg(&deb).arg(&scratch))?;
    // Trixie's package keeps its modules under /usr (merged /usr), older ones under /lib.
    let base = [scratch.join("usr"), scratch.clone()]
        .into_iter()
        .find(|b| b.join("lib/modules").is_dir())
        .context("no lib/modules in the kernel package")?;
    let (_, release) = find_image(&scratch).context("no kernel image in the package")?;
    output(Command::new("depmod").arg("-b").arg(&base).arg(&release))?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&scratch, root)?;
    fs::remove_file(&deb)?;
    Ok(())
}

/// Runs a command, failing with its stderr; returns its stdout.
fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An exclusive lock on `path`, held until the returned file is dropped.
fn lock(path: &Path) -> anyhow::Result<fs::File> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::suite_of;

    #[test]
    fn kernels_are_named_by_version_or_suite() {
        assert_eq!(suite_of("5.10"), Some(("5.10", "bullseye")));
        assert_eq!(suite_of("trixie"), Some(("6.12", "trixie")));
        assert_eq!(suite_of("4.19"), None);
    }
}
