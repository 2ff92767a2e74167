//! Holds the crate's layout to what `docs/architecture.md` promises: no module imports one that
//! imports it back (directly or round a longer loop), and no production file far beyond a few
//! hundred lines. Read from the sources, as a newcomer would read them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the crate (`session::client`, `web`, …) with its source, tests cut off.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{name}::"), out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let module = match stem {
                    "lib" => continue,
                    "mod" => prefix.trim_end_matches("::").to_string(),
                    s => format!("{prefix}{s}"),
                };
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
                out.insert(module, code);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut out,
    );
    out
}

/// The modules each module names: `crate::a::b`, `super::b`, and its own children's items.
fn imports(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let known = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| mods.contains_key(m))
    };
    let mut out = BTreeMap::new();
    for (m, code) in mods {
        let parent = m.rsplit_once("::").map(|(p, _)| p.to_string());
        let mut deps = BTreeSet::new();
        for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            let target = if let Some(rest) = word.strip_prefix("crate::") {
                known(rest)
            } else if let Some(rest) = word.strip_prefix("super::") {
                known(&match &parent {
                    Some(p) => format!("{p}::{rest}"),
                    None => rest.to_string(),
                })
            } else {
                // `use child::…` inside a module with children.
                word.split_once("::")
                    .and_then(|(head, _)| known(&format!("{m}::{head}")))
                    .filter(|t| t != m && t.starts_with(&format!("{m}::")))
            };
            if let Some(t) = target.filter(|t| t != m) {
                deps.insert(t);
            }
        }
        out.insert(m.clone(), deps);
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports(&modules());
    assert!(graph.len() > 20, "the sources were read: {graph:?}");
    // Depth-first search for a loop from every module.
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_string());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_string());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(at.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(&graph, m, &mut Vec::new(), &mut done) {
            panic!("modules import each other: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn no_production_file_is_far_beyond_a_few_hundred_lines() {
    for (m, code) in modules() {
        let lines = code
            .lines()
            .filter(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with("//")
            })
            .count();
        assert!(lines <= 600, "{m}: {lines} lines of code: split it by job");
    }
}
