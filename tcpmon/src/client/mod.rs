//! The commands that ask the running agent over its Unix socket. Here `tcpmon tail`: sends the
//! filter, prints what comes back, as a table (`table`), NDJSON, or per-connection timelines
//! (`timeline`); `tail --recent` (`recent`); `tcpmon sockets` (`sockets`).
pub mod recent;
pub mod sockets;
pub mod table;
pub mod timeline;

use std::{
    io::{self, BufRead, BufReader, ErrorKind, Write},
    path::Path,
    sync::Arc,
};

use anyhow::Context as _;

use self::{
    table::{lost_line, retransmit_row, table_row, TABLE_HEADER},
    timeline::Timelines,
};
use crate::{
    cli::{OutputFormat, TailOptions},
    error::Error,
    startup,
    tail::{
        agent::hub::Hub,
        event::{json_line, message_of, Message},
        filter::Filter,
        request::Request,
    },
    unix_socket::connect,
    workload::cgroups::{Workloads, KUBELET_PODS},
};

pub fn run(options: TailOptions) -> anyhow::Result<()> {
    let filter = Filter {
        ports: options.port.clone(),
        addrs: options.addr.clone(),
        states: options.state.clone(),
        families: options.family.clone(),
        pids: options.pid.clone(),
        workloads: options.workload.clone(),
    };
    let mut printer = Printer::new(options.output, options.count);
    // Block-buffered: a line-buffered stdout costs a write(2) per event. The buffer is flushed
    // whenever the agent has nothing more to send for now (see `from_agent`) and at exit.
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let result = if options.recent {
        recent::run(&options, filter, &mut out)
    } else if options.standalone {
        standalone(&options, filter, &mut printer, &mut out)
    } else {
        from_agent(&options.socket, &filter, &mut printer, &mut out)
    };
    let result = result.and_then(|()| out.flush().map_err(anyhow::Error::from));
    match result {
        // A closed stdout (`| head`) is a normal way to stop.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
}

fn from_agent(
    socket: &Path,
    filter: &Filter,
    printer: &mut Printer,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut stream = connect(socket)?;
    stream.write_all(Request::Tail(filter.clone()).line().as_bytes())?;
    printer.start(out)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let line = line.trim_ascii_end();
        // NDJSON out is the wire format: pass events through as bytes, without decoding them
        // again (or checking their UTF-8: the agent wrote them).
        let go_on = if printer.format == OutputFormat::Json && line.starts_with(EVENT_PREFIX) {
            printer.passthrough(line, out)?
        } else {
            let message: Message =
                serde_json::from_slice(line).context("the agent sent something unexpected")?;
            if let Message::Error { message } = message {
                anyhow::bail!("the agent refused the request: {message}");
            }
            printer.print(message, out)?
        };
        if !go_on {
            return Ok(());
        }
        // Flush when the next read would wait: batches under load, prompt when quiet.
        if reader.buffer().is_empty() {
            out.flush()?;
        }
    }
    anyhow::bail!("the agent closed the connection (it stopped)")
}

/// Loads a probe of its own and prints from it until interrupted.
fn standalone(
    options: &TailOptions,
    filter: Filter,
    printer: &mut Printer,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    crate::privileges::check()?;
    let netns = options
        .netns
        .as_deref()
        .map(startup::netns_inode)
        .transpose()?;
    let max = tcpmon_common::maps::MAX_TRACKED_SOCKETS;
    let mut probe = startup::load_probe(netns, max, Vec::new(), false)?;
    // The tail needs no count of sockets per state: close the program's start-up window now.
    if let Some(readers) = probe.take_readers() {
        readers.close_startup_window().map_err(|cause| Error::Io {
            what: "closing the start-up window".into(),
            cause,
        })?;
    }
    let (ring, switch) = probe.take_tail_maps()?;
    startup::runtime()?.block_on(async {
        let hub = Hub::start(ring, switch);
        let workloads = Arc::new(Workloads::new(None, Path::new(KUBELET_PODS)));
        let wanted = filter.clone();
        let mut subscription = hub.subscribe(filter);
        // The header says the probe is attached and listening.
        printer.start(out)?;
        let interrupt = startup::shutdown_signal()?;
        tokio::pin!(interrupt);
        loop {
            tokio::select! {
                batch = subscription.next() => {
                    let Some(batch) = batch else { return Ok(()) };
                    let missed = subscription.take_missed();
                    if missed > 0 {
                        printer.print(Message::Lost { count: missed }, out)?;
                    }
                    let offset = subscription.realtime_offset_ns();
                    for record in batch.iter() {
                        let workload = workloads.name_off_runtime(record.cgroup_id).await;
                        if !wanted.matches_workload(workload.as_deref()) {
                            continue;
                        }
                        let Some(message) = message_of(record, offset, workload.as_deref()) else {
                            continue;
                        };
                        if !printer.print(message, out)? {
                            return Ok(());
                        }
                    }
                    if subscription.is_empty() {
                        out.flush()?;
                    }
                }
                _ = &mut interrupt => return Ok(()),
            }
        }
    })
}

/// How every event line of the wire format starts.
const EVENT_PREFIX: &[u8] = b"{\"type\":\"event\",";

/// Prints messages in the chosen format; stops after `count` events if given.
pub struct Printer {
    format: OutputFormat,
    left: Option<u64>,
    timelines: Timelines,
}

impl Printer {
    pub fn new(format: OutputFormat, count: Option<u64>) -> Printer {
        Printer {
            format,
            left: count,
            timelines: Timelines::default(),
        }
    }

    pub fn start(&self, out: &mut impl Write) -> io::Result<()> {
        if self.format == OutputFormat::Table {
            writeln!(out, "{TABLE_HEADER}")?;
            out.flush()?;
        }
        Ok(())
    }

    /// Prints an event line that is already NDJSON; false once `count` events were printed.
    fn passthrough(&mut self, line: &[u8], out: &mut impl Write) -> io::Result<bool> {
        out.write_all(line)?;
        out.write_all(b"\n")?;
        self.counted(1, out)
    }

    fn counted(&mut self, printed: u64, out: &mut impl Write) -> io::Result<bool> {
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(printed);
            if *left == 0 {
                out.flush()?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Prints one message; false once `count` events (or timelines) were printed.
    pub fn print(&mut self, message: Message, out: &mut impl Write) -> io::Result<bool> {
        let printed = match (&self.format, message) {
            (OutputFormat::Json, message) => {
                let event = matches!(message, Message::Event(_));
                writeln!(out, "{}", json_line(&message))?;
                u64::from(event)
            }
            (_, Message::Lost { count }) => {
                writeln!(out, "{}", lost_line(count))?;
                0
            }
            (_, Message::Error { message }) => {
                writeln!(out, "error: {message}")?;
                0
            }
            (OutputFormat::Table, Message::Event(e)) => {
                writeln!(out, "{}", table_row(&e))?;
                1
            }
            (OutputFormat::Table, Message::Retransmit(e)) => {
                writeln!(out, "{}", retransmit_row(&e))?;
                0
            }
            (OutputFormat::Timeline, Message::Retransmit(e)) => {
                self.timelines.retransmit(&e);
                0
            }
            (OutputFormat::Timeline, Message::Event(e)) => {
                let lines = self.timelines.push(e);
                for line in &lines {
                    writeln!(out, "{line}")?;
                }
                lines.len() as u64
            }
        };
        self.counted(printed, out)
    }
}
