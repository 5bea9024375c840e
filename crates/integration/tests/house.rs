//! The house rules of docs/architecture.md that code can check: no two source files of a
//! crate import each other, directly or around a circle (a module's `mod` declarations are
//! structure, not imports; test modules are left out), and the node imports nothing from
//! the controller (what they share lives in `core/`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use regex::Regex;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path (`controller::publish`) of each source file of a crate, and its text without
/// comments and without its `#[cfg(test)]` part.
fn modules(krate: &str) -> BTreeMap<String, String> {
    let src = root().join("crates").join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let comment = Regex::new(r"//[^\n]*").unwrap();
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut m = rel.to_string_lossy().replace('/', "::");
            if let Some(parent) = m.strip_suffix("::mod") {
                m = parent.to_string();
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let text = comment.replace_all(&text, "").to_string();
            let code = text.split("#[cfg(test)]").next().unwrap().to_string();
            (m, code)
        })
        .collect()
}

/// Which modules each module imports (`crate::a::b`, `super::x`, `super::{x, y::z}`).
fn imports(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let krate = Regex::new(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)").unwrap();
    let sup_group = Regex::new(r"(?s)super::\{(.*?)\};").unwrap();
    let name = Regex::new(r"(?:^|[\s,{])([a-z_][a-z0-9_]*)\b").unwrap();
    let sup = Regex::new(r"super::([a-z_][a-z0-9_]*)").unwrap();
    let mut graph = BTreeMap::new();
    for (m, code) in mods {
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        let in_parent =
            |n: &str| if parent.is_empty() { n.to_string() } else { format!("{parent}::{n}") };
        let mut deps = BTreeSet::new();
        for c in krate.captures_iter(code) {
            let parts: Vec<&str> = c[1].split("::").collect();
            if let Some(k) = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|p| mods.contains_key(p))
            {
                deps.insert(k);
            }
        }
        for g in sup_group.captures_iter(code) {
            for n in name.captures_iter(&g[1]) {
                deps.insert(in_parent(&n[1]));
            }
        }
        for c in sup.captures_iter(code) {
            deps.insert(in_parent(&c[1]));
        }
        deps.retain(|d| d != m && mods.contains_key(d));
        graph.insert(m.clone(), deps);
    }
    graph
}

/// Every circle of imports, each as its sorted modules.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        out: &mut BTreeSet<Vec<String>>,
    ) {
        let last = path.last().unwrap().clone();
        for d in g.get(&last).into_iter().flatten() {
            if let Some(i) = path.iter().position(|p| p == d) {
                let mut c = path[i..].to_vec();
                c.sort();
                out.insert(c);
            } else if path.len() < 8 {
                path.push(d.clone());
                walk(g, path, out);
                path.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    for m in graph.keys() {
        walk(graph, &mut vec![m.clone()], &mut out);
    }
    out
}

#[test]
fn no_source_file_imports_around_a_circle() {
    let mut found = Vec::new();
    for krate in ["csi", "driver", "routeros", "rds-emulator", "conformance", "deploy"] {
        let mods = modules(krate);
        for c in circles(&imports(&mods)) {
            found.push(format!("{krate}: {}", c.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mods: BTreeMap<String, String> = [
        ("a".to_string(), "use super::b::X;".to_string()),
        ("b".to_string(), "use crate::a::Y;".to_string()),
        ("c".to_string(), "use super::{a, b::Z};".to_string()),
    ]
    .into();
    let graph = imports(&mods);
    assert_eq!(graph["c"], ["a".to_string(), "b".to_string()].into());
    assert_eq!(circles(&graph), [vec!["a".to_string(), "b".to_string()]].into());
}

#[test]
fn the_node_imports_nothing_from_the_controller() {
    let mods = modules("driver");
    let graph = imports(&mods);
    let bad: Vec<String> = graph
        .iter()
        .filter(|(m, _)| m.starts_with("node"))
        .flat_map(|(m, deps)| {
            deps.iter().filter(|d| d.starts_with("controller")).map(move |d| format!("{m} -> {d}"))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}
