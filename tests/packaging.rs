//! The Debian package's definition stays true without building it (that
//! takes a release build; `packaging/build-deb.sh` builds and checks it):
//! every asset it names exists or is one the script generates, both units
//! and every shipped mapping and doc are in it, and its maintainer scripts
//! only reload systemd.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn assets() -> Vec<(String, String)> {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_asset_exists_or_is_built_by_the_script() {
    let script = std::fs::read_to_string(root().join("packaging/build-deb.sh")).unwrap();
    for (source, _) in assets() {
        if let Some(built) = source.strip_prefix("target/release/") {
            let name = built.rsplit('/').next().unwrap();
            assert!(
                built == "cosell-sync" || script.contains(name),
                "{source}: neither the binary nor made by build-deb.sh"
            );
        } else if let Some(dir) = source.strip_suffix("/*.md") {
            assert!(root().join(dir).is_dir(), "{source}");
        } else {
            assert!(root().join(&source).is_file(), "{source} does not exist");
        }
    }
}

#[test]
fn the_package_ships_both_units_the_mappings_the_docs_and_no_etc() {
    let assets = assets();
    let has = |source: &str, dest: &str| {
        assets
            .iter()
            .any(|(s, d)| s == source && d.starts_with(dest))
    };
    assert!(has("target/release/cosell-sync", "usr/bin/"));
    for unit in [
        "systemd/cosell-sync.service",
        "systemd/cosell-sync@.service",
    ] {
        assert!(has(unit, "usr/lib/systemd/system/"), "{unit}");
    }
    assert!(has(
        "config/default.toml",
        "usr/share/doc/cosell-sync/examples/"
    ));
    for mapping in std::fs::read_dir(root().join("config/mappings")).unwrap() {
        let name = mapping.unwrap().file_name().into_string().unwrap();
        assert!(
            has(
                &format!("config/mappings/{name}"),
                "usr/share/cosell-sync/mappings/"
            ),
            "{name}"
        );
    }
    assert!(has("docs/*.md", "usr/share/doc/cosell-sync/"));
    assert!(has(
        "deploy/prometheus/alerts.yml",
        "usr/share/cosell-sync/"
    ));
    assert!(has(
        "deploy/grafana/cosell-sync.json",
        "usr/share/cosell-sync/"
    ));
    for dest in [
        "usr/share/bash-completion/",
        "usr/share/zsh/",
        "usr/share/fish/",
        "usr/share/man/man1/",
    ] {
        assert!(assets.iter().any(|(_, d)| d.starts_with(dest)), "{dest}");
    }
    assert!(
        !assets.iter().any(|(_, d)| d.starts_with("etc/")),
        "settings and secrets are the operator's"
    );
}

#[test]
fn installing_the_package_reloads_systemd_and_starts_nothing() {
    for script in ["postinst", "postrm"] {
        let text = std::fs::read_to_string(root().join("packaging/debian").join(script)).unwrap();
        assert!(text.contains("systemctl daemon-reload"), "{script}");
        let commands: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter(|l| l.contains("systemctl") || l.contains("deb-systemd"))
            .collect();
        assert!(
            commands
                .iter()
                .all(|l| l.contains("systemctl daemon-reload")),
            "{script}: {commands:?}"
        );
        assert!(!text.contains("#DEBHELPER#"), "{script}");
    }
}
