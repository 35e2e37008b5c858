//! The privileged integration tests (and the checks of `deploy/`, which share their support
//! code), one crate (as aya's `test/integration-test`): the real
//! eBPF program, real TCP traffic in network namespaces the tests create, exact numbers.
//! Each file is a module; `support` is compiled once for all of them.
//!
//! Tests of different modules never run at the same time (`support::NetNs` waits for its
//! module's turn), as when each file was a test binary of its own: the storm, the soak and the
//! timing and memory bounds assume the machine is not also running another module's workload.
//! Tests of one module run in parallel. The kernel matrix runs a few modules in virtual
//! machines (`xtask/src/vm/mod.rs`), by name: `integration agent_metrics::`.
mod support;

mod agent_metrics;
mod busy_node;
mod deploy;
mod errors;
mod gone_cgroups;
mod handshake_failures;
mod hostile_http;
mod initiators;
mod least_privilege;
mod listen_queues;
mod namespaces;
mod pin;
mod ports;
mod prometheus;
mod recent;
mod resets;
mod retransmits;
mod robustness;
mod soak;
mod socket_ages;
mod sockets;
mod storm;
mod tail;
mod tail_capacity;
mod web;
mod workload_series;
mod workloads;
