//! The agent's side of the tail: the ring-buffer reader and fan-out (`hub`), the filter it
//! pushes to the program (`kernel_filter`), the recent trouble it keeps (`recent`), the Unix socket server (`server`) and the NDJSON
//! wire format it writes (`wire`).
pub mod hub;
pub mod kernel_filter;
pub mod ndjson;
pub mod recent;
pub mod server;
