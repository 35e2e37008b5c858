//! The top-level modules of the agent and of the eBPF crate form layers, not a knot: no module
//! uses, through `crate::`, a module that uses it back, directly or through others
//! (docs/ARCHITECTURE.md, "Layers"). Every `crate::` path counts: code, tests (`#[cfg(test)]`
//! and `*_tests.rs`) and doc links.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules each top-level module of `src` uses.
fn uses(src: &Path) -> Graph {
    let tops: BTreeSet<String> = fs::read_dir(src)
        .expect("read src")
        .flatten()
        .map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    let mut graph = Graph::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                fs::read_dir(&path)
                    .expect("read dir")
                    .flatten()
                    .map(|e| e.path()),
            );
            continue;
        }
        let name = path.to_string_lossy();
        if !name.ends_with(".rs") {
            continue;
        }
        let relative = path.strip_prefix(src).expect("under src");
        let module = relative.components().next().expect("a component");
        let module = module
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let code = fs::read_to_string(&path).expect("read a source file");
        let used = graph.entry(module.clone()).or_default();
        for target in crate_paths(&code) {
            if target != module && tops.contains(&target) {
                used.insert(target);
            }
        }
    }
    graph
}

/// The first component of every `crate::` path in `code`, `use crate::{a::x, b}` included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        let word: String = group[i..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push(word);
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    found
}

/// A cycle in `graph` (its modules in order), if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn assert_layers(crate_dir: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(crate_dir)
        .join("src");
    let graph = uses(&src);
    assert!(
        graph.len() > 10,
        "found the modules of {crate_dir}: {graph:?}"
    );
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "these modules of {crate_dir} use each other: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_agents_modules_form_layers() {
    assert_layers(".");
}

#[test]
fn the_ebpf_crates_modules_form_layers() {
    assert_layers("../tcpmon-ebpf");
}

#[test]
fn the_check_finds_a_cycle_and_reads_grouped_uses() {
    let code = "use crate::{\n    cli::{A, B},\n    tail::agent::{hub::Hub},\n    state,\n};\nlet x = crate::probe::y();";
    assert_eq!(crate_paths(code), ["cli", "tail", "state", "probe"]);
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
