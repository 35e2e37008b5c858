//! What a client asks on the agent's Unix socket: one JSON line, then the answer as JSON lines.
//! Version 1 of the protocol, the only one, is what this file and the message types it names
//! define: a live tail (a [`Filter`]), the kept trouble (`{"recent": {...}}`), or the open
//! sockets (`{"sockets": {}}`). The request names what it asks for by its one key; anything
//! else is a tail filter. Unknown fields are refused, so a misspelled filter is an error, not a
//! request for every event of the host. A change that old clients could not read needs a new
//! version, stated here and in docs/TAIL.md.
use serde::{Deserialize, Serialize};

use super::{agent::recent::Query as RecentQuery, filter::Filter};
use crate::sockets;

/// The protocol this agent speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One request, as the agent reads it.
#[derive(Debug, PartialEq)]
pub enum Request {
    Tail(Filter),
    Recent(RecentQuery),
    Sockets(sockets::Query),
}

/// `{"sockets": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskSockets<Q> {
    sockets: Q,
}

/// `{"recent": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskRecent<Q> {
    recent: Q,
}

impl Request {
    /// The request on `line`, or what is wrong with it.
    pub fn parse(line: &str) -> Result<Request, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let has = |key: &str| value.as_object().is_some_and(|o| o.contains_key(key));
        let request = if has("sockets") {
            serde_json::from_value::<AskSockets<sockets::Query>>(value)
                .map(|r| Request::Sockets(r.sockets))
        } else if has("recent") {
            serde_json::from_value::<AskRecent<RecentQuery>>(value)
                .map(|r| Request::Recent(r.recent))
        } else {
            serde_json::from_value::<Filter>(value).map(Request::Tail)
        };
        request.map_err(|e| e.to_string())
    }

    /// The request as a client sends it: one line of JSON, newline included.
    pub fn line(&self) -> String {
        let json = match self {
            Request::Tail(filter) => serde_json::to_string(filter),
            Request::Recent(query) => serde_json::to_string(&AskRecent { recent: query }),
            Request::Sockets(query) => serde_json::to_string(&AskSockets { sockets: query }),
        };
        // Plain structs of strings and numbers always serialize.
        json.unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_by_its_key_and_a_misspelled_filter_refused() {
        assert_eq!(
            Request::parse(r#"{"sockets":{}}"#),
            Ok(Request::Sockets(sockets::Query {}))
        );
        let Ok(Request::Recent(query)) = Request::parse(r#"{"recent":{"follow":true}}"#) else {
            panic!("a recent request");
        };
        assert!(query.follow);
        let Ok(Request::Tail(filter)) = Request::parse(r#"{"ports":[80]}"#) else {
            panic!("a tail filter");
        };
        assert_eq!(filter.ports, [80]);
        assert_eq!(Request::parse("{}"), Ok(Request::Tail(Filter::default())));
        let misspelled = Request::parse(r#"{"prots":[1]}"#).expect_err("refused");
        assert!(misspelled.contains("unknown field `prots`"), "{misspelled}");
        assert!(Request::parse(r#"{"sockets":{"x":1}}"#).is_err());
        assert!(Request::parse("not json").is_err());
    }

    #[test]
    fn what_a_client_sends_the_agent_reads_back() {
        let requests = [
            Request::Tail(Filter {
                ports: vec![443],
                ..Filter::default()
            }),
            Request::Recent(RecentQuery {
                since_ns: Some(5),
                follow: true,
                filter: Filter::default(),
            }),
            Request::Sockets(sockets::Query {}),
        ];
        for request in requests {
            let line = request.line();
            assert!(line.ends_with('\n'));
            assert_eq!(Request::parse(&line), Ok(request));
        }
    }
}
