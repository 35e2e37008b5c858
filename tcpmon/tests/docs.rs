//! Every `tcpmon` command line in the README and docs/ parses with the real command-line
//! parser: a documented flag or value that does not exist fails here.
#[path = "../../xtask/src/doc_commands.rs"]
mod doc_commands;

use std::path::Path;

use clap::Parser as _;
use tcpmon::cli::Cli;

#[test]
fn documented_tcpmon_commands_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in doc_commands::documents(&root) {
        let text = std::fs::read_to_string(&path).expect("readable doc");
        let name = path
            .file_name()
            .expect("file")
            .to_string_lossy()
            .to_string();
        for invocation in doc_commands::invocations(&name, &text, "tcpmon") {
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&invocation.argv) {
                // --help and --version "fail" to parse with a message to print: that is fine.
                use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
                if !matches!(e.kind(), DisplayHelp | DisplayVersion) {
                    let first = e.to_string().lines().next().unwrap_or_default().to_string();
                    failures.push(format!(
                        "{}: {:?}: {first}",
                        invocation.place, invocation.argv
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "documented commands that do not parse:\n{}",
        failures.join("\n")
    );
    assert!(
        checked >= 20,
        "only {checked} tcpmon commands found in the docs"
    );
}
