//! The module structure as the README describes it: dependencies between top-level modules form
//! no cycle, and lib.rs and the README's architecture table list exactly the modules in `src/`.
//!
//! A dependency is any `crate::<module>` path (also inside `use crate::{a, b::c}`) in a file of
//! another top-level module; full-line comments are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules the tree holds: `src/x.rs` and `src/x/` (the binaries excluded).
fn tree_modules() -> BTreeSet<String> {
    std::fs::read_dir(src_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_owned();
            let is_module = p.is_dir() || p.extension().is_some_and(|e| e == "rs");
            (is_module && !["lib", "main", "bin"].contains(&name.as_str())).then_some(name)
        })
        .collect()
}

fn identifier(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of every top-level item of the `{…}` use group `group` starts with.
fn group_heads(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut heads) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    start = i + 1;
                }
            }
            ',' if depth == 1 => {
                heads.push(identifier(group[start..i].trim_start()));
                start = i + 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    heads.push(identifier(group[start..i].trim_start()));
                    break;
                }
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules named by `crate::` paths in `source`.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c == '$' || c.is_ascii_alphanumeric() || c == '_') {
            continue; // `$crate::` in a macro, or an identifier ending in "crate"
        }
        let rest = &code[at + "crate::".len()..];
        if rest.starts_with('{') {
            found.extend(group_heads(rest).into_iter().map(str::to_owned));
        } else {
            found.insert(identifier(rest).to_owned());
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

/// module -> the modules it uses.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = tree_modules();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src_dir()).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !modules.contains(&module) {
            continue;
        }
        let used = crate_paths(&std::fs::read_to_string(&file).unwrap());
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(
            used.into_iter()
                .filter(|m| *m != module && modules.contains(m)),
        );
    }
    graph
}

/// One cycle, as the list of modules along it, if there is any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = dependency_graph();
    let listing: Vec<String> = graph
        .iter()
        .map(|(m, deps)| format!("{m} -> {deps:?}"))
        .collect();
    assert_eq!(
        find_cycle(&graph),
        None,
        "import cycle; the graph:\n{}",
        listing.join("\n")
    );
}

#[test]
fn the_cycle_check_finds_cycles_and_reads_use_groups() {
    let used = crate_paths(
        "use crate::{config::{self, Source}, db};\nuse crate::ingest::Pipeline;\n// crate::http\nlet x = $crate::y;",
    );
    assert_eq!(used, ["config", "db", "ingest"].map(String::from).into());
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}

#[test]
fn lib_rs_declares_exactly_the_modules_of_the_tree() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').to_owned())
        })
        .collect();
    assert_eq!(declared, tree_modules());
    for module in tree_modules() {
        assert!(
            lib.contains(&format!("`{module}`")),
            "lib.rs's module map does not describe `{module}`"
        );
    }
}

/// The README's architecture table: the modules of each row, top row first.
fn readme_layers() -> Vec<BTreeSet<String>> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme
        .split("| module | concern |")
        .nth(1)
        .expect("README has the architecture table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let first_cell = row.split('|').nth(1).unwrap();
            first_cell
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|name| name.split(['/', ':']).next().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_readme_architecture_table_lists_exactly_the_modules_of_the_tree() {
    let listed: BTreeSet<String> = readme_layers().into_iter().flatten().collect();
    assert_eq!(listed, tree_modules());
}

#[test]
fn every_module_uses_only_modules_below_it_in_the_readme_table() {
    let layers = readme_layers();
    let row = |m: &str| layers.iter().position(|l| l.contains(m));
    let mut upward = Vec::new();
    for (module, deps) in dependency_graph() {
        for dep in deps {
            if row(&dep) <= row(&module) {
                upward.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down the README's table: {upward:?}"
    );
}
