//! The `tcpmon tail` command: sends the filter, prints what comes back.
use std::{
    io::{self, BufRead, BufReader, ErrorKind, Write},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::Context as _;

use super::{
    event::Message,
    filter::Filter,
    format::{json_line, lost_line, table_row, TABLE_HEADER},
    hub::Hub,
    timeline::Timelines,
};
use crate::{
    cli::{OutputFormat, TailOptions},
    error::Error,
    probe::Probe,
};

pub fn run(options: TailOptions) -> anyhow::Result<()> {
    let filter = Filter {
        ports: options.port.clone(),
        addrs: options.addr.clone(),
        states: options.state.clone(),
        families: options.family.clone(),
        pids: options.pid.clone(),
    };
    let mut printer = Printer::new(options.output, options.count);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = if options.standalone {
        standalone(&options, filter, &mut printer, &mut out)
    } else {
        from_agent(&options.socket, &filter, &mut printer, &mut out)
    };
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
    let path = socket.display().to_string();
    let mut stream = UnixStream::connect(socket).map_err(|cause| match cause.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => Error::AgentMissing { path },
        ErrorKind::PermissionDenied => Error::TailPermission { path },
        _ => Error::Io {
            what: format!("cannot connect to {path}"),
            cause,
        },
    })?;
    let request = serde_json::to_string(filter).context("encoding the filter")?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    printer.start(out)?;
    for line in BufReader::new(stream).lines() {
        let message: Message =
            serde_json::from_str(&line?).context("the agent sent something unexpected")?;
        if let Message::Error { message } = message {
            anyhow::bail!("the agent refused the request: {message}");
        }
        if !printer.print(message, out)? {
            return Ok(());
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
        .map(crate::agent::netns_inode)
        .transpose()?;
    let mut probe = Probe::load(&crate::agent::probe_config(netns)?)?;
    let (ring, switch) = probe.take_tail_maps()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let hub = Hub::start(ring, switch).context("polling the event ring buffer")?;
        let mut subscription = hub.subscribe(filter);
        // The header says the probe is attached and listening.
        printer.start(out)?;
        let interrupt = crate::agent::shutdown_signal()?;
        tokio::pin!(interrupt);
        loop {
            tokio::select! {
                event = subscription.events.recv() => {
                    let Some(event) = event else { return Ok(()) };
                    let missed = subscription.take_missed();
                    if missed > 0 {
                        printer.print(Message::Lost { count: missed }, out)?;
                    }
                    if !printer.print(Message::Event(event), out)? {
                        return Ok(());
                    }
                }
                _ = &mut interrupt => return Ok(()),
            }
        }
    })
}

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
            (OutputFormat::Timeline, Message::Event(e)) => {
                let lines = self.timelines.push(e);
                for line in &lines {
                    writeln!(out, "{line}")?;
                }
                lines.len() as u64
            }
        };
        out.flush()?;
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(printed);
            return Ok(*left > 0);
        }
        Ok(true)
    }
}
