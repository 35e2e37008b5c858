//! `tcpmon tail --recent`: the failed handshakes, resets and handshake retransmissions the
//! agent kept (even with nobody tailing), filtered as the live tail is, then new ones as they
//! come with `--follow`.
use std::{
    io::{BufRead, BufReader, Write},
    net::IpAddr,
};

use anyhow::{bail, Context as _};

use crate::{
    cli::{OutputFormat, TailOptions},
    socket_fields::endpoint,
    tail::{agent::recent::Query, filter::Filter, request::Request},
    unix_socket::connect,
};

/// The table's header line.
pub const HEADER: &str = "TIME(UTC)       WHAT               DETAIL               STATE        LOCAL                  REMOTE";

pub fn run(options: &TailOptions, filter: Filter, out: &mut impl Write) -> anyhow::Result<()> {
    if options.output == OutputFormat::Timeline {
        bail!("--recent prints -o table or -o json, not timelines");
    }
    if !filter.pids.is_empty() {
        bail!("--recent cannot filter by --pid: trouble events carry no process");
    }
    if !filter.workloads.is_empty() {
        bail!("--recent cannot filter by --workload: trouble events carry no cgroup");
    }
    let request = Request::Recent(Query {
        since_ns: options.since.map(|d| d.as_nanos() as u64),
        follow: options.follow,
        filter,
    });
    let mut stream = connect(&options.socket)?;
    stream.write_all(request.line().as_bytes())?;
    if options.output == OutputFormat::Table {
        writeln!(out, "{HEADER}")?;
        out.flush()?;
    }
    for (index, line) in BufReader::new(stream).lines().enumerate() {
        let line = line?;
        let value: serde_json::Value = serde_json::from_str(&line).context("reading the agent")?;
        let text = |key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_string()
        };
        match value.get("type").and_then(|t| t.as_str()) {
            Some("error") => bail!("the agent refused: {}", text("message")),
            Some("lost") if options.output == OutputFormat::Table => {
                let count = value.get("count").and_then(|c| c.as_u64()).unwrap_or(0);
                writeln!(
                    out,
                    "*** {count} events lost: this client read too slowly ***"
                )?;
            }
            _ if options.output == OutputFormat::Json => writeln!(out, "{line}")?,
            _ => writeln!(out, "{}", row(&value))?,
        }
        out.flush()?;
        if options.count.is_some_and(|n| index as u64 + 1 >= n) {
            break;
        }
    }
    Ok(())
}

fn row(v: &serde_json::Value) -> String {
    let text = |key: &str| {
        v.get(key)
            .and_then(|x| x.as_str())
            .unwrap_or("-")
            .to_string()
    };
    let port = |key: &str| {
        v.get(key)
            .and_then(|x| u16::try_from(x.as_u64()?).ok())
            .unwrap_or(0)
    };
    // A reset for a segment that matched no socket has ports only; a listener no peer (as
    // `ss -l` prints it).
    let endpoint = |addr: &str, port_key: &str| {
        let ip = v.get(addr).and_then(|x| x.as_str()?.parse::<IpAddr>().ok());
        match (ip, port(port_key)) {
            (Some(ip), port) => endpoint(ip, port),
            (None, 0) => "*:*".to_string(),
            (None, port) => format!("*:{port}"),
        }
    };
    let time = text("time");
    format!(
        "{:<15} {:<18} {:<20} {:<12} {:<22} {}",
        time.get(11..23).unwrap_or(&time),
        text("what"),
        text("detail"),
        text("state"),
        endpoint("local", "local_port"),
        endpoint("remote", "remote_port"),
    )
}
