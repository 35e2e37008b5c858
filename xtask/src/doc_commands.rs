//! The command lines the README and docs/ show: every line of a ```sh block, split as a shell
//! splits words. Tests parse them with the real command-line parsers (tcpmon's in
//! `tcpmon/tests/docs.rs`, xtask's in `xtask/src/main.rs`), so a documented flag that does not
//! exist fails a test. Shared by both through `#[path]`: one extractor, two parsers.
use std::path::{Path, PathBuf};

/// One documented invocation: where it is, and its words from the program name on.
#[derive(Debug)]
pub struct Invocation {
    pub place: String,
    pub argv: Vec<String>,
}

/// README.md and every docs/*.md under `root` (the workspace).
pub fn documents(root: &Path) -> Vec<PathBuf> {
    let mut paths = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    paths.extend(docs);
    paths
}

/// Every invocation of `program` (`tcpmon`, or `xtask` for `cargo xtask ...`) in the ```sh
/// blocks of `text`. A command counts when its first word (after `sudo` and `VAR=value`
/// words) is the program or a path ending in `/program`, or when it follows a `--` word
/// (`kubectl exec ... -- /tcpmon tail`).
pub fn invocations(name: &str, text: &str, program: &str) -> Vec<Invocation> {
    let mut found = Vec::new();
    let mut in_sh = false;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && trimmed.trim_end() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        for command in commands(line) {
            if let Some(argv) = argv_of(&command, program) {
                found.push(Invocation {
                    place: format!("{name}:{}", number + 1),
                    argv,
                });
            }
        }
    }
    found
}

/// The words of each command of a shell line: split at `|`, `&&`, `||` and `;`, comments
/// dropped, quotes removed.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    word.push(q);
                }
            }
            '#' if !in_word => break,
            ' ' | '\t' | '|' | '&' | ';' => {
                if in_word {
                    commands
                        .last_mut()
                        .expect("one")
                        .push(std::mem::take(&mut word));
                    in_word = false;
                }
                if c != ' ' && c != '\t' {
                    if chars.peek() == Some(&c) {
                        chars.next();
                    }
                    commands.push(Vec::new());
                }
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        commands.last_mut().expect("one").push(word);
    }
    commands.retain(|c| !c.is_empty());
    commands
}

fn is_program(word: &str, program: &str) -> bool {
    word == program || word.ends_with(&format!("/{program}"))
}

fn argv_of(words: &[String], program: &str) -> Option<Vec<String>> {
    let mut start = 0;
    while start < words.len() && (words[start] == "sudo" || is_assignment(&words[start])) {
        start += 1;
    }
    let words = &words[start..];
    if program == "xtask" {
        return (words.len() >= 2 && words[0] == "cargo" && words[1] == "xtask")
            .then(|| words[1..].to_vec());
    }
    if words.first().is_some_and(|w| is_program(w, program)) {
        return Some(words.to_vec());
    }
    let after = words.iter().position(|w| w == "--")? + 1;
    words
        .get(after)
        .filter(|w| is_program(w, program))
        .map(|_| words[after..].to_vec())
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_invocations_in_sh_blocks_only() {
        let text = "```sh\nsudo tcpmon tail --port 443 -o json | jq .  # NDJSON\n\
                    kubectl -n monitoring exec ds/tcpmon -- /tcpmon tail --port 443\n\
                    sudo systemctl enable --now tcpmon\ncargo xtask bench --seconds 2\n```\n\
                    ```text\ntcpmon tail [OPTIONS]\n```\n";
        let tcpmon: Vec<Vec<String>> = invocations("x", text, "tcpmon")
            .into_iter()
            .map(|i| i.argv)
            .collect();
        assert_eq!(
            tcpmon,
            [
                vec!["tcpmon", "tail", "--port", "443", "-o", "json"],
                vec!["/tcpmon", "tail", "--port", "443"],
            ]
        );
        let xtask = invocations("x", text, "xtask");
        assert_eq!(xtask.len(), 1);
        assert_eq!(xtask[0].argv, ["xtask", "bench", "--seconds", "2"]);
        assert_eq!(xtask[0].place, "x:5");
    }

    #[test]
    fn quotes_and_assignments() {
        let words =
            commands("TCPMON_VM_KVM=1 sudo tcpmon tail --addr '10.0.0.0/8' && echo \"a b\"");
        assert_eq!(words.len(), 2);
        assert_eq!(
            argv_of(&words[0], "tcpmon"),
            Some(vec![
                "tcpmon".into(),
                "tail".into(),
                "--addr".into(),
                "10.0.0.0/8".into()
            ])
        );
        assert_eq!(words[1], ["echo", "a b"]);
    }
}
