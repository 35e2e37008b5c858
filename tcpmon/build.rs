//! Builds the eBPF object with aya-build (nightly, bpf-linker) and leaves it in OUT_DIR, where
//! `include_bytes_aligned!` embeds it in the agent.
use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR unset")?;
    let ebpf_dir = format!("{manifest_dir}/../tcpmon-ebpf");
    let common_dir = format!("{manifest_dir}/../tcpmon-common");
    println!("cargo:rerun-if-changed={common_dir}");
    let package = Package {
        name: "tcpmon-ebpf",
        root_dir: &ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
