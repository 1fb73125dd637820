//! The daemon's layering, checked on its source: no module of `src/` names a
//! module above it (`crate::<module>`), and the simulator crate and the core
//! crate depend on no crate of ours. The order, bottom up, is the README's.

use std::path::{Path, PathBuf};

/// Each module of `src/` and the modules below it that it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("metrics", &[]),
    ("http", &["metrics"]),
    ("store", &["domain", "metrics"]),
    ("config", &["domain", "mapping"]),
    ("telemetry", &["config"]),
    (
        "partner_center",
        &["domain", "mapping", "metrics", "http", "config"],
    ),
    ("crm", &["domain", "mapping", "metrics", "http", "config"]),
    (
        "sync",
        &[
            "domain",
            "mapping",
            "metrics",
            "http",
            "config",
            "store",
            "partner_center",
            "crm",
        ],
    ),
    (
        "ops",
        &[
            "domain",
            "mapping",
            "metrics",
            "http",
            "config",
            "store",
            "partner_center",
            "crm",
            "sync",
            "telemetry",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_owned());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::<module>` names a file uses.
fn crate_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        // `cosell_crate::` or `my_crate::` are not ours.
        if text[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = text[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[test]
fn no_module_of_the_daemon_names_a_module_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut wrong = Vec::new();
    for (module, below) in LAYERS {
        let dir = root.join("src").join(module);
        let path = if dir.is_dir() {
            dir
        } else {
            root.join("src").join(format!("{module}.rs"))
        };
        assert!(path.exists(), "{} is missing", path.display());
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in crate_modules(&text) {
                if used != *module && !below.contains(&used.as_str()) {
                    wrong.push(format!(
                        "{} uses crate::{used}, which is not below {module}",
                        file.strip_prefix(root).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn the_rule_sees_an_upward_import() {
    assert_eq!(
        crate_modules("use crate::sync::Engine;\nlet x = crate::store::ts(now);\nuse my_crate::x;"),
        vec!["sync".to_owned(), "store".to_owned()]
    );
}

#[test]
fn the_core_and_the_simulator_depend_on_no_crate_of_ours() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (krate, packages, paths) in [
        (
            "crates/core",
            ["cosell-sync", "cosell-sim"],
            ["cosell_sync::", "cosell_sim::"],
        ),
        (
            "crates/sim",
            ["cosell-sync", "cosell-core"],
            ["cosell_sync::", "cosell_core::"],
        ),
    ] {
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        for name in packages {
            assert!(
                !manifest.contains(name),
                "{krate} depends on {name}: it must stand on its own"
            );
        }
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in paths {
                assert!(!text.contains(name), "{} names {name}", file.display());
            }
        }
    }
}
