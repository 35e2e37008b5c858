//! Rebuild when bpf-linker changes; it links every eBPF object this crate produces.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
    // bpf-linker asks LLVM to expand memcpy "in order" (for offload JITs that pattern-match
    // copies), which turns off LLVM's inline expansion of every memory intrinsic: each zeroed
    // or copied struct became a call to a byte-wise `memset` or `memcpy` subprogram, a
    // BPF-to-BPF call and a loop on the hot path. Plain loads and stores are what the x86 JIT
    // wants.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
