//! `tcpmon tail`: TCP state changes as they happen, from the agent's tail socket or from a
//! probe of its own (`--standalone`).
pub mod client;
pub mod event;
pub mod filter;
pub mod format;
pub mod hub;
pub mod server;
pub mod timeline;
pub mod wire;
