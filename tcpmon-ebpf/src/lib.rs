//! Empty on purpose: the program is the `tcpmon` binary target (src/main.rs). This library
//! target lets `tcpmon` name the crate as a build dependency, so cargo rebuilds the agent when
//! the program's sources change.
#![no_std]
