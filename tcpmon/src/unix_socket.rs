//! The agent's Unix socket, where `tcpmon tail`, `tail --recent` and `tcpmon sockets` ask it:
//! where it is, and connecting to it. (What is said on it: `tail::agent::server`.)
use std::{io::ErrorKind, os::unix::net::UnixStream, path::Path};

use crate::error::Error;

/// Where the agent listens unless `--tail-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tcpmon/tail.sock";

/// Connects to the agent's tail socket, with one clear error when that cannot be done.
pub fn connect(socket: &Path) -> Result<UnixStream, Error> {
    let path = socket.display().to_string();
    UnixStream::connect(socket).map_err(|cause| match cause.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => Error::AgentMissing { path },
        ErrorKind::PermissionDenied => Error::TailPermission { path },
        _ => Error::Io {
            what: format!("cannot connect to {path}"),
            cause,
        },
    })
}
