//! The agent's side of the tail: the ring-buffer reader and fan-out (`hub`), the Unix socket
//! server (`server`) and the NDJSON wire format it writes (`wire`).
pub mod hub;
pub mod server;
pub mod wire;
