//! The `tcpmon sockets` command: asks the agent, filters, sorts oldest first, prints.
use std::io::{self, BufRead, BufReader, Write};

use anyhow::{bail, Context as _};

use crate::{
    cli::{SocketsFormat, SocketsOptions},
    socket_fields::endpoint,
    sockets::{Query, SocketLine},
    tail::request::Request,
    unix_socket::connect,
};

pub fn run(options: SocketsOptions) -> anyhow::Result<()> {
    let mut stream = connect(&options.socket)?;
    stream.write_all(Request::Sockets(Query {}).line().as_bytes())?;
    let mut sockets = Vec::new();
    for line in BufReader::new(stream).lines() {
        let value: serde_json::Value = serde_json::from_str(&line?).context("reading the agent")?;
        if value.get("type").and_then(|t| t.as_str()) == Some("error") {
            let message = value.get("message").and_then(|m| m.as_str()).unwrap_or("");
            bail!("the agent refused: {message}");
        }
        sockets.push(serde_json::from_value::<SocketLine>(value).context("reading the agent")?);
    }
    let mut sockets = select(sockets, &options);
    sort_oldest_first(&mut sockets);
    let mut out = io::BufWriter::new(io::stdout().lock());
    let printed = print(&sockets, options.output, &mut out).and_then(|()| out.flush());
    match printed {
        // A closed stdout (`| head`) is a normal way to stop.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn select(sockets: Vec<SocketLine>, options: &SocketsOptions) -> Vec<SocketLine> {
    sockets
        .into_iter()
        .filter(|s| options.state.is_empty() || options.state.iter().any(|w| w.name() == s.state))
        .filter(|s| {
            options.port.is_empty()
                || options.port.contains(&s.local_port)
                || options.port.contains(&s.remote_port)
        })
        .filter(|s| {
            options.workload.is_empty()
                || s.workload
                    .as_ref()
                    .is_some_and(|w| options.workload.contains(w))
        })
        .filter(|s| match options.older_than {
            None => true,
            Some(d) => s.age_seconds.is_some_and(|age| age >= d.as_secs_f64()),
        })
        .collect()
}

/// Oldest first; sockets of unknown age (older than the agent) last.
fn sort_oldest_first(sockets: &mut [SocketLine]) {
    sockets.sort_by(|a, b| {
        let age = |s: &SocketLine| s.age_seconds.unwrap_or(-1.0);
        age(b).total_cmp(&age(a))
    });
}

fn print(sockets: &[SocketLine], format: SocketsFormat, out: &mut impl Write) -> io::Result<()> {
    if format == SocketsFormat::Json {
        for s in sockets {
            writeln!(
                out,
                "{}",
                serde_json::to_string(s).map_err(io::Error::other)?
            )?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<12} {:>9}  {:<28} {:<28} {:>7}  {:<16} WORKLOAD",
        "STATE", "AGE", "LOCAL", "REMOTE", "PID", "COMM"
    )?;
    for s in sockets {
        writeln!(
            out,
            "{:<12} {:>9}  {:<28} {:<28} {:>7}  {:<16} {}",
            s.state,
            s.age_seconds.map_or("-".to_string(), age),
            endpoint(s.local, s.local_port),
            endpoint(s.remote, s.remote_port),
            s.pid.map_or("-".to_string(), |p| p.to_string()),
            s.comm.as_deref().unwrap_or("-"),
            s.workload.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

/// An age as people read it: 850ms, 12.5s, 3m07s, 2h05m.
fn age(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1e3)
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        format!("{}m{:02}s", (seconds / 60.0) as u64, seconds as u64 % 60)
    } else {
        format!(
            "{}h{:02}m",
            (seconds / 3600.0) as u64,
            (seconds as u64 / 60) % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_process_and_workload_in_aligned_columns() {
        let socket = SocketLine {
            netns: 1,
            connection: "ffff1".into(),
            family: "inet".into(),
            state: "CLOSE_WAIT".into(),
            local: "127.0.0.1".parse().expect("an address"),
            local_port: 8083,
            remote: "127.0.0.1".parse().expect("an address"),
            remote_port: 48652,
            age_seconds: Some(7.8),
            inode: Some(1),
            pid: Some(1755),
            comm: Some("python3".into()),
            workload: Some("web.service".into()),
        };
        let orphan = SocketLine {
            pid: None,
            comm: None,
            workload: None,
            ..socket.clone()
        };
        let mut out = Vec::new();
        print(&[socket, orphan], SocketsFormat::Table, &mut out).expect("a Vec takes writes");
        let text = String::from_utf8(out).expect("the table is UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "STATE              AGE  LOCAL                        REMOTE                           PID  COMM             WORKLOAD");
        assert_eq!(lines[1], "CLOSE_WAIT        7.8s  127.0.0.1:8083               127.0.0.1:48652                 1755  python3          web.service");
        assert_eq!(lines[2], "CLOSE_WAIT        7.8s  127.0.0.1:8083               127.0.0.1:48652                    -  -                -");
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(0.85), "850ms");
        assert_eq!(age(12.46), "12.5s");
        assert_eq!(age(187.0), "3m07s");
        assert_eq!(age(7500.0), "2h05m");
    }
}
