//! The layers of `src/`, checked: every `crate::…` path in a module names a module of a lower
//! layer (so the import graph has no circle and no arrow points up), `store` sees only the
//! domain (and `secret`, to redact its connection errors), the leaves use only the `secret` leaf,
//! and the simulator shares only the API types, the webhook signature and `Secret`.
//! ARCHITECTURE.md ("Layers") draws the same picture; a new top-level module must be placed
//! in `LAYERS` before this test passes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up: a module may use only modules listed before it.
const LAYERS: &[&str] = &[
    // Leaves: import nothing of payrun.
    "money", "text", "secret", "config", "metrics", "health", // the domain: no I/O
    "batch", "item", "events", // edges that do I/O, each knowing only what is below it
    "webhook", "intake", "store", "dots", // the item jobs, the poller, the feeder
    "jobs", // operator commands, servers, the CLI
    "app", "bench", "cli",
];

const LEAVES: &[&str] = &["money", "text", "secret", "config", "metrics", "health"];
/// What `store` may use: the domain, and `secret` to redact its own connection errors.
const STORE_USES: &[&str] = &["money", "batch", "item", "events", "secret"];
/// Leaves use only leaves: `config` holds its secrets as `secret::Secret`.
const LEAF_USES: &[&str] = &["secret"];

/// `crate::NAME` paths outside comments, per top-level module, with the file they stand in.
fn imports() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in rust_files(&root) {
        let rel = file.strip_prefix(&root).expect("under src");
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
            .expect("a file name");
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for path in crate_paths(code) {
                out.entry(module.clone())
                    .or_default()
                    .insert((path, rel.display().to_string()));
            }
        }
    }
    out
}

/// Every `crate::a::b…` path on a line, as `a::b…`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `$crate::` and `foo_crate::` are not paths into this crate.
        if before.is_some_and(|c| c == '$' || c.is_alphanumeric() || c == '_') {
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        found.push(path.trim_end_matches(':').to_string());
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn top(path: &str) -> &str {
    path.split("::").next().unwrap_or_default()
}

#[test]
fn every_import_points_down_the_layers_so_the_module_graph_has_no_circle() {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (module, paths) in imports() {
        let Some(from) = rank(&module) else {
            wrong.push(format!(
                "module `{module}` is not placed in LAYERS (tests/architecture.rs)"
            ));
            continue;
        };
        for (path, file) in paths {
            let to = top(&path);
            if to == module {
                continue;
            }
            match rank(to) {
                Some(r) if r < from => {}
                _ => wrong.push(format!("{file}: `{module}` uses crate::{path}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_store_imports_only_the_domain_and_the_leaves_only_leaves() {
    let all = imports();
    let mut wrong = Vec::new();
    for (module, allowed) in [("store", STORE_USES)]
        .into_iter()
        .chain(LEAVES.iter().map(|l| (*l, LEAF_USES)))
    {
        for (path, file) in all.get(module).into_iter().flatten() {
            let to = top(path);
            if to != module && !allowed.contains(&to) {
                wrong.push(format!("{file}: `{module}` uses crate::{path}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_simulator_shares_only_the_api_types_the_webhook_signature_and_secret() {
    let mut wrong = Vec::new();
    for (path, file) in imports().remove("dots").into_iter().flatten() {
        if !file.starts_with("dots/sim") {
            continue;
        }
        let ok = [
            "dots::sim",
            "dots::types",
            "webhook::verify",
            "secret::Secret",
        ]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}::")));
        if !ok {
            wrong.push(format!("{file}: the simulator uses crate::{path}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_path_scanner_finds_paths_and_skips_macro_crates() {
    assert_eq!(
        crate_paths("use crate::store::{Store, X}; let y = crate::item::ItemState::Pending;"),
        vec!["store", "item::ItemState::Pending"]
    );
    assert!(crate_paths("$crate::store::on_pool!(x)").is_empty());
}
