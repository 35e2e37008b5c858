//! Idempotent installation of what building and testing tcpmon needs. Versions are the ones
//! verified on Debian 12 with rustup's stable 1.95 and nightly toolchains (docs/TESTING.md,
//! "Toolchain"): bpf-linker 0.10.0 links with the LLVM inside the rustup toolchain, so no
//! system LLVM is needed (0.11 and later need a system LLVM 21-23 that Debian 12 lacks).
use std::process::Command;

use anyhow::{bail, Context as _};

const BPF_LINKER_VERSION: &str = "0.10.0";

/// Debian packages the privileged tests call: (command, package).
const TEST_TOOLS: [(&str, &str); 6] = [
    ("bpftool", "bpftool"),
    ("nft", "nftables"),
    ("promtool", "prometheus"),
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("systemd-analyze", "systemd"),
];

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Nightly with rust-src (for `-Z build-std=core`) and bpf-linker.
pub fn toolchain() -> anyhow::Result<()> {
    if !output("rustup", &["toolchain", "list"]).contains("nightly") {
        run(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    let installed = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    );
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    let linker = output("bpf-linker", &["--version"]);
    if !linker.contains(BPF_LINKER_VERSION) {
        let spec = format!("bpf-linker@{BPF_LINKER_VERSION}");
        run("cargo", &["install", &spec, "--locked", "--force"])?;
    }
    Ok(())
}

/// kubernetes-validate (PyPI) checks the Kubernetes manifests against the Kubernetes schemas
/// it carries, offline.
const KUBERNETES_VALIDATE: &str = "1.37.0";

/// bpftool, promtool, iproute2, util-linux and systemd-analyze from Debian, and kubernetes-validate from PyPI,
/// installed when missing.
pub fn test_tools() -> anyhow::Result<()> {
    pip_install_missing("kubernetes-validate", KUBERNETES_VALIDATE)?;
    install_missing(&TEST_TOOLS)
}

/// Installs `package` at exactly `version` from PyPI unless that version is installed.
fn pip_install_missing(package: &str, version: &str) -> anyhow::Result<()> {
    let check =
        format!("import importlib.metadata as m; assert m.version('{package}') == '{version}'");
    if succeeds("python3", &["-c", &check]) {
        return Ok(());
    }
    let spec = format!("{package}=={version}");
    let args = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--root-user-action=ignore",
        &spec,
    ];
    run("python3", &args)
}

/// Installs, from Debian, the package of every (command, package) whose command is missing.
fn install_missing(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(command, _)| !succeeds("sh", &["-c", &format!("command -v {command}")]))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    run("apt-get", &args)
}

/// What the soak test calls: `ip`, `ss` and `nstat`, all from iproute2.
pub fn soak_tools() -> anyhow::Result<()> {
    install_missing(&[("ip", "iproute2"), ("nstat", "iproute2")])
}

/// virtme-ng (PyPI) boots a kernel image with the host's root file system shared over 9p: the
/// kernel matrix's virtual machines. 1.42 finds a Debian package's modules next to its kernel
/// image, so nothing is installed under the host's /lib/modules.
const VIRTME_NG: &str = "1.42";

/// qemu and busybox (which virtme-ng's initramfs is built from) from Debian, and virtme-ng from
/// PyPI, installed when missing. virtme-ng is run as `python3 -m virtme_ng.run`: a fresh pyenv
/// has no shim for a script pip has just installed.
pub fn vm_tools() -> anyhow::Result<()> {
    install_missing(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("depmod", "kmod"),
        ("dpkg-deb", "dpkg"),
    ])?;
    pip_install_missing("virtme-ng", VIRTME_NG)
}

/// The peers `cargo xtask bench` measures tcpmon against, from Debian.
pub fn bench_tools() -> anyhow::Result<()> {
    test_tools()?;
    install_missing(&[("tcpstates", "libbpf-tools"), ("bpftrace", "bpftrace")])?;
    // tcpstates and bpftrace attach through tracefs (tcpmon does not need it), which a fresh
    // machine does not mount.
    if !std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        run("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"])?;
    }
    Ok(())
}
