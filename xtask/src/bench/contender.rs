//! What the benchmark compares with no tracing: tcpmon with and without tail clients, its
//! peers, and the floors (empty programs) that say what attaching anything at all costs.
use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{
    empty_program::{self, EmptyProgram},
    harness::{program_ids, start_agent, start_tail, Process},
};

const BPFTRACE: &str =
    "tracepoint:sock:inet_sock_set_state { @[args->oldstate, args->newstate] = count(); }";
/// A program that does nothing on the classic tracepoint: what tcpstates and bpftrace pay
/// before their own work (the kernel builds the trace record, then dispatches to BPF).
const BPFTRACE_EMPTY: &str = "tracepoint:sock:inet_sock_set_state { }";
/// A port nothing in the benchmark uses: a tail client filtered to it receives nothing.
const IDLE_PORT: &str = "9";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contender {
    /// No tracing against no tracing (an A/A comparison): its true ratio is 1, so how far its
    /// median and interval stray from 1 is the benchmark's own resolution.
    NoTracing,
    EmptyTpBtf,
    EmptyClassic,
    Tcpmon,
    /// `--max-workloads 0`: tcpmon without counting per socket cgroup, to show what the
    /// `workload` label costs.
    TcpmonNoWorkloads,
    TcpmonTailIdle,
    TcpmonTail,
    Bpftrace,
    Tcpstates,
}

impl Contender {
    pub const ALL: [Contender; 9] = [
        Contender::NoTracing,
        Contender::EmptyTpBtf,
        Contender::EmptyClassic,
        Contender::Tcpmon,
        Contender::TcpmonNoWorkloads,
        Contender::TcpmonTailIdle,
        Contender::TcpmonTail,
        Contender::Bpftrace,
        Contender::Tcpstates,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::NoTracing => "no tracing either (A/A: the benchmark's own noise)",
            Contender::EmptyTpBtf => "empty tp_btf program (tcpmon's attach type: the floor)",
            Contender::EmptyClassic => "empty classic-tracepoint program (bpftrace)",
            Contender::Tcpmon => "tcpmon agent",
            Contender::TcpmonNoWorkloads => "tcpmon agent --max-workloads 0 (no workload label)",
            Contender::TcpmonTailIdle => "tcpmon agent + 1 tail client filtered to an idle port",
            Contender::TcpmonTail => "tcpmon agent + 1 tail client (NDJSON to /dev/null)",
            Contender::Bpftrace => "bpftrace, transitions counted in a map",
            Contender::Tcpstates => "libbpf-tools tcpstates (to /dev/null)",
        }
    }

    pub fn has_tail(self) -> bool {
        matches!(self, Contender::TcpmonTail | Contender::TcpmonTailIdle)
    }
}

/// A contender attached: its processes or program, its programs' ids, and the agent's address
/// if it has one. Dropping it detaches everything.
pub struct Attached {
    pub processes: Vec<Process>,
    _empty: Option<EmptyProgram>,
    pub programs: Vec<u32>,
    pub agent: Option<SocketAddr>,
}

pub fn attach(contender: Contender) -> anyhow::Result<Attached> {
    let before = program_ids()?;
    let quiet = |program: &str, args: &[&str]| -> anyhow::Result<Process> {
        Ok(Process(
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {program}"))?,
        ))
    };
    let mut empty = None;
    let (processes, agent) = match contender {
        Contender::NoTracing => {
            return Ok(Attached {
                processes: vec![],
                _empty: None,
                programs: vec![],
                agent: None,
            })
        }
        Contender::EmptyTpBtf => {
            empty = Some(empty_program::attach()?);
            (vec![], None)
        }
        Contender::EmptyClassic => (vec![quiet("bpftrace", &["-e", BPFTRACE_EMPTY])?], None),
        Contender::Tcpmon => {
            let (agent, _, addr) = start_agent(&[])?;
            (vec![agent], Some(addr))
        }
        Contender::TcpmonNoWorkloads => {
            let (agent, _, addr) = start_agent(&["--max-workloads", "0"])?;
            (vec![agent], Some(addr))
        }
        Contender::TcpmonTailIdle | Contender::TcpmonTail => {
            let (agent, _, addr) = start_agent(&[])?;
            let filter: &[&str] = if contender == Contender::TcpmonTailIdle {
                &["--port", IDLE_PORT]
            } else {
                &[]
            };
            let tail = start_tail(addr, filter)?;
            // Dropped in order: the client first, so it does not report the agent gone.
            (vec![tail, agent], Some(addr))
        }
        Contender::Bpftrace => (vec![quiet("bpftrace", &["-e", BPFTRACE])?], None),
        Contender::Tcpstates => (vec![quiet("tcpstates", &[])?], None),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let programs: Vec<u32> = program_ids()?
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        if !programs.is_empty() {
            if !processes.is_empty() && agent.is_none() {
                // bpftrace and tcpstates print nothing when ready: give them a moment.
                std::thread::sleep(Duration::from_millis(500));
            }
            return Ok(Attached {
                processes,
                _empty: empty,
                programs,
                agent,
            });
        }
        if Instant::now() > deadline {
            bail!("{} loaded no program", contender.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
