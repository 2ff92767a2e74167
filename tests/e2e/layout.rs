//! Holds every crate's layout to what `docs/architecture.md` promises: no module imports one that
//! imports it back (directly or round a longer loop), no production file far beyond a few
//! hundred lines, and no `Result<_, String>` in a library's public API. Read from the sources, as
//! a newcomer would read them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The workspace's crates by folder: the libraries, and the binary (`src`).
const CRATES: &[&str] = &[
    "schemas",
    "link",
    "modbus-map",
    "hub",
    "edge",
    "spool",
    "historian",
    "client",
    ".",
];

/// Every module of a crate (`session::client`, `web`, …) with its source, tests cut off.
fn modules(krate: &str) -> BTreeMap<String, String> {
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
                    "lib" | "main" if prefix.is_empty() => "crate".to_string(),
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
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(krate)
            .join("src"),
        "",
        &mut out,
    );
    assert!(!out.is_empty(), "{krate}: no sources read");
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
    for krate in CRATES {
        let graph = imports(&modules(krate));
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: modules import each other: {}", cycle.join(" -> "));
        }
    }
    let hub = imports(&modules("hub"));
    assert!(hub.len() > 20, "the hub's sources were read: {hub:?}");
}

#[test]
fn the_search_finds_a_planted_loop() {
    let mut graph = imports(&modules("edge"));
    graph
        .entry("sources".into())
        .or_default()
        .insert("run".into());
    graph
        .entry("run".into())
        .or_default()
        .insert("points".into());
    graph
        .entry("points".into())
        .or_default()
        .insert("sources".into());
    assert!(find_cycle(&graph).is_some());
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
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
    graph
        .keys()
        .find_map(|m| visit(graph, m, &mut Vec::new(), &mut done))
}

#[test]
fn no_production_file_is_far_beyond_a_few_hundred_lines() {
    for (krate, m, code) in CRATES
        .iter()
        .flat_map(|k| modules(k).into_iter().map(move |(m, c)| (k, m, c)))
    {
        let lines = code
            .lines()
            .filter(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with("//")
            })
            .count();
        assert!(
            lines <= 600,
            "{krate} {m}: {lines} lines of code: split it by job"
        );
    }
}

#[test]
fn no_library_returns_a_bare_string_error_from_its_public_api() {
    for krate in CRATES.iter().filter(|k| **k != ".") {
        for (m, code) in modules(krate) {
            for (i, line) in code.lines().enumerate() {
                let t = line.trim_start();
                if t.starts_with("pub fn") || t.starts_with("pub async fn") {
                    // The signature runs to its opening brace.
                    let sig: String = code
                        .lines()
                        .skip(i)
                        .take_while(|l| !l.trim_end().ends_with('{'))
                        .chain(code.lines().skip(i).find(|l| l.trim_end().ends_with('{')))
                        .collect();
                    assert!(
                        !returns_string_error(&sig),
                        "{krate} {m}: {}: a public function returns Result<_, String>; give it a thiserror enum",
                        t.trim_end()
                    );
                }
            }
        }
    }
}

/// Whether a signature's `Result<…>` has `String` as its error type.
fn returns_string_error(sig: &str) -> bool {
    let sig: String = sig.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(start) = sig.find("->") else {
        return false;
    };
    let ret = &sig[start + 2..];
    let Some(open) = ret.find("Result<") else {
        return false;
    };
    let mut depth = 0;
    let mut second = None;
    for (i, c) in ret[open + 6..].char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    let end = open + 6 + i;
                    return second.is_some_and(|s| &ret[s..end] == "String");
                }
            }
            ',' if depth == 1 => second = Some(open + 6 + i + 1),
            _ => {}
        }
    }
    false
}

#[test]
fn the_string_error_check_reads_generics() {
    assert!(returns_string_error(
        "pub fn f(x: u8) -> Result<(), String> {"
    ));
    assert!(!returns_string_error(
        "pub fn f() -> Result<HashMap<String, String>, MyError> {"
    ));
    assert!(!returns_string_error(
        "pub fn f(s: Result<(), String>) -> u8 {"
    ));
}
