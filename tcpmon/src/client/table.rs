//! Output formats of `tcpmon tail`: a table in the spirit of bcc's tcpstates, NDJSON, and the
//! per-connection timeline (timeline.rs).
use crate::{socket_fields::endpoint, tail::event::Event};

/// The table's header line.
pub const TABLE_HEADER: &str = "TIME(UTC)       PID     COMM             LOCAL                  REMOTE                 OLDSTATE    -> NEWSTATE          MS WORKLOAD";

/// One table row.
pub fn table_row(e: &Event) -> String {
    let time = e.time.get(11..23).unwrap_or(&e.time);
    let pid = e.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
    let comm = e.comm.as_deref().unwrap_or("-");
    let ms =
        e.ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.3}"));
    // The workload last: its width varies most (`host`, `NAMESPACE/POD`), and a column at the
    // end needs no padding.
    let workload = e.workload.as_deref().unwrap_or("-");
    format!(
        "{time:<15} {pid:<7} {comm:<16} {:<22} {:<22} {:<11} -> {:<11} {ms:>8} {workload}",
        endpoint(e.local, e.local_port),
        endpoint(e.remote, e.remote_port),
        e.old_state.name(),
        e.new_state.name(),
    )
}

/// A SYN sent again, in the table's columns: `SYN_SENT -> SYN again`.
pub fn retransmit_row(e: &Event) -> String {
    let row = table_row(e);
    let states = format!("{:<11} -> {:<11}", e.old_state.name(), e.new_state.name());
    row.replacen(
        &states,
        &format!("{:<11} -> {:<11}", "SYN_SENT", "SYN again"),
        1,
    )
}

/// The notice printed when events were dropped for this client.
pub fn lost_line(count: u64) -> String {
    format!("*** {count} events lost: this client read too slowly ***")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        state::TcpState,
        tail::event::{json_line, Message},
    };

    pub fn sample() -> Event {
        Event {
            time: "2026-11-24T05:23:43.123456Z".into(),
            mono_ns: 1_000,
            connection: "ffff888100001000".into(),
            pid: Some(4242),
            comm: Some("curl".into()),
            family: "inet".into(),
            local: "127.0.0.1".parse().unwrap(),
            local_port: 41234,
            remote: "127.0.0.1".parse().unwrap(),
            remote_port: 8080,
            old_state: TcpState::SynSent,
            new_state: TcpState::Established,
            ms: Some(0.0526),
            error: 0,
            workload: Some("curl.service".into()),
        }
    }

    #[test]
    fn table_rows_line_up_with_the_header() {
        assert_eq!(
            table_row(&sample()),
            "05:23:43.123    4242    curl             127.0.0.1:41234        127.0.0.1:8080         SYN_SENT    -> ESTABLISHED    0.053 curl.service"
        );
        let softirq = Event {
            pid: None,
            comm: None,
            ms: None,
            workload: None,
            local: "::1".parse().unwrap(),
            remote: "::1".parse().unwrap(),
            ..sample()
        };
        assert_eq!(
            table_row(&softirq),
            "05:23:43.123    -       -                [::1]:41234            [::1]:8080             SYN_SENT    -> ESTABLISHED        - -"
        );
        assert_eq!(
            TABLE_HEADER.find("LOCAL"),
            table_row(&sample()).find("127.0.0.1:41234")
        );
        assert_eq!(
            TABLE_HEADER.find("OLDSTATE"),
            table_row(&sample()).find("SYN_SENT")
        );
        assert_eq!(
            TABLE_HEADER.find("WORKLOAD"),
            table_row(&sample()).find("curl.service")
        );
    }

    #[test]
    fn json_lines_are_the_documented_objects() {
        assert_eq!(
            json_line(&Message::Event(sample())),
            r#"{"type":"event","time":"2026-11-24T05:23:43.123456Z","mono_ns":1000,"connection":"ffff888100001000","pid":4242,"comm":"curl","family":"inet","local":"127.0.0.1","local_port":41234,"remote":"127.0.0.1","remote_port":8080,"old_state":"SYN_SENT","new_state":"ESTABLISHED","ms":0.0526,"error":0,"workload":"curl.service"}"#
        );
        assert_eq!(
            json_line(&Message::Lost { count: 12 }),
            r#"{"type":"lost","count":12}"#
        );
        assert_eq!(
            lost_line(12),
            "*** 12 events lost: this client read too slowly ***"
        );
    }
}
