//! Scrape time: what `/metrics` shows. The collector reads the kernel's aggregate maps (through
//! the probe) and every listener and namespace at once (through the kernel readers), and
//! `families` turns one such read into Prometheus metric families. Nothing here runs per
//! event or per namespace.
pub mod collector;
pub mod descriptors;
pub mod families;
pub mod histogram;
pub mod listen_watch;
pub mod listeners;
pub mod ports;
pub mod resets;
pub mod scrape_parts;
pub mod socket_ages;
pub mod socket_states;
pub mod workloads;
