//! A scrape in parts, as node_exporter's collectors: each part runs on its own, a part that
//! fails leaves out only the families it feeds (and says why on stderr), and every scrape
//! reports each part's success and duration (`tcpmon_scrape_collector_success{collector}`,
//! `tcpmon_scrape_collector_duration_seconds{collector}`).
use std::time::Instant;

use prometheus::proto::MetricFamily;

use super::{descriptors, families::gauge};
use crate::error::Error;

/// The parts of a scrape, in the order they run, and what each feeds.
pub const PARTS: [&str; 5] = [
    // Every listener: the listen families and port labels; with `namespaces` and `maps`,
    // tcpmon_sockets.
    "listeners",
    // Every namespace's time-wait count: tcpmon_sockets.
    "namespaces",
    // The programs' run statistics: tcpmon_bpf_program_*.
    "programs",
    // The per-socket map: tcpmon_tracked_sockets*, tcpmon_oldest_socket_age_seconds.
    "tracked_sockets",
    // The aggregate maps: every other family.
    "maps",
];

/// What each part of one scrape did.
#[derive(Debug, Default)]
pub struct Parts {
    /// (part, succeeded, seconds), in the order they ran.
    done: Vec<(&'static str, bool, f64)>,
}

impl Parts {
    /// Runs part `name`; its value, or `None` (the error printed) if it failed.
    pub fn run<T>(
        &mut self,
        name: &'static str,
        part: impl FnOnce() -> Result<T, Error>,
    ) -> Option<T> {
        let started = Instant::now();
        let result = part();
        let seconds = started.elapsed().as_secs_f64();
        self.done.push((name, result.is_ok(), seconds));
        result
            .map_err(|e| eprintln!("tcpmon: scrape: {name}: {e}"))
            .ok()
    }

    /// Whether every part that ran succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.done.iter().all(|(_, ok, _)| *ok)
    }

    /// `tcpmon_scrape_collector_success` and `tcpmon_scrape_collector_duration_seconds`.
    pub fn families(&self) -> Vec<MetricFamily> {
        let series = |value: fn(&(&'static str, bool, f64)) -> f64| {
            self.done
                .iter()
                .map(|part| gauge(&[("collector", part.0)], value(part)))
                .collect()
        };
        vec![
            descriptors::SCRAPE_COLLECTOR_SUCCESS.with(series(|p| f64::from(u8::from(p.1)))),
            descriptors::SCRAPE_COLLECTOR_DURATION.with(series(|p| p.2)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_part_is_reported_and_the_others_still_give_their_values() {
        let mut parts = Parts::default();
        let listeners = parts.run("listeners", || Ok(3));
        let namespaces: Option<u32> = parts.run("namespaces", || {
            Err(Error::Io {
                what: "reading".into(),
                cause: std::io::Error::other("gone"),
            })
        });
        assert_eq!((listeners, namespaces), (Some(3), None));
        assert!(!parts.all_succeeded());
        let families = parts.families();
        let success = &families[0];
        assert_eq!(success.name(), "tcpmon_scrape_collector_success");
        let values: Vec<(String, f64)> = success
            .get_metric()
            .iter()
            .map(|m| {
                (
                    m.get_label()[0].value().to_string(),
                    m.get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(
            values,
            [
                ("listeners".to_string(), 1.0),
                ("namespaces".to_string(), 0.0)
            ]
        );
    }
}
