//! Scrape time: what `/metrics` shows. The collector reads the kernel's aggregate maps (through
//! the probe) and counts sockets with sock_diag in every network namespace, and `families`
//! turns one such read into Prometheus metric families. Nothing here runs per event.
pub mod collector;
pub mod descriptors;
pub mod families;
pub mod histogram;
pub mod listen_watch;
pub mod listeners;
pub mod netns;
pub mod ports;
pub mod resets;
pub mod sock_diag;
pub mod socket_ages;
pub mod workloads;
