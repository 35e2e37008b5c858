//! `tcpmon tail`: TCP state changes as they happen. The agent side reads the kernel's ring
//! buffer and fans its records out to the clients of the tail socket; the client side asks
//! for a filter and prints what comes back (or loads a probe of its own with `--standalone`).
//! Events and filters are shared by both.
pub mod agent;
pub mod event;
pub mod filter;
pub mod request;
