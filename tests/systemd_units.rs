//! The systemd units hand the daemon what it looks for: every secret as a
//! credential under the name the configuration reads (`<section>_<key>` in
//! `$CREDENTIALS_DIRECTORY`), and, for the per-tenant template, each
//! instance's own settings, mappings, state and `cosell-sync.<instance>.…`
//! credential files. systemd's part (specifiers, `LoadCredential=`,
//! `Environment=`) is played here on a temporary root; `.ci/systemd-check.sh`
//! checks the units with systemd itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cosell_sync::config::{self, SECRET_KEYS, Sources};
use cosell_sync::domain::CrmKind;
use secrecy::ExposeSecret;

fn unit(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(name),
    )
    .unwrap()
}

/// The values of `key=` lines in the `[Service]` section.
fn directives(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// The specifiers the units use, for instance `instance` on a root at `root`.
fn expand(s: &str, root: &Path, instance: &str) -> String {
    s.replace("%E", &root.join("etc").display().to_string())
        .replace("%S", &root.join("var/lib").display().to_string())
        .replace("%i", instance)
}

/// What systemd gives the service: its settings file, its environment and a
/// credentials directory filled from `root/etc/credstore` per `LoadCredential=`.
fn start(unit: &str, root: &Path, instance: &str) -> Sources {
    let exec = expand(&directives(unit, "ExecStart")[0], root, instance);
    let words: Vec<&str> = exec.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "--config").unwrap();
    let file = PathBuf::from(words[at + 1]);
    let env: BTreeMap<String, String> = directives(unit, "Environment")
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap();
            (k.to_owned(), expand(v, root, instance))
        })
        .collect();
    let creds = root.join(format!("run/credentials/{instance}"));
    std::fs::create_dir_all(&creds).unwrap();
    for line in directives(unit, "LoadCredential") {
        let (id, source) = line.split_once(':').unwrap();
        let source = root
            .join("etc/credstore")
            .join(expand(source, root, instance));
        // A credential whose file is missing is simply not passed in.
        if let Ok(value) = std::fs::read(&source) {
            std::fs::write(creds.join(id), value).unwrap();
        }
    }
    Sources {
        file: Some(file),
        env,
        credentials_dir: Some(creds),
    }
}

fn write(path: PathBuf, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

#[test]
fn both_units_pass_every_secret_in_under_the_name_the_configuration_reads() {
    for (name, source_prefix) in [
        ("cosell-sync.service", "cosell-sync."),
        ("cosell-sync@.service", "cosell-sync.%i."),
    ] {
        let lines = directives(&unit(name), "LoadCredential");
        for (section, key) in SECRET_KEYS {
            let id = format!("{section}_{key}");
            let want = format!("{id}:{source_prefix}{id}");
            assert!(
                lines.contains(&want),
                "{name} lacks LoadCredential={want}: {lines:?}"
            );
        }
        assert_eq!(lines.len(), SECRET_KEYS.len(), "{name}: {lines:?}");
    }
}

#[test]
fn each_template_instance_reads_its_own_settings_mappings_state_and_credentials() {
    let unit = unit("cosell-sync@.service");
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mappings/dynamics.toml"),
    )
    .unwrap();
    for (tenant, port) in [("acme", 9471), ("globex", 9472)] {
        write(
            root.join(format!("etc/cosell-sync/{tenant}.toml")),
            &format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[partner_center]\nclient_id = \"pc-app\"\n\n\
                 [dynamics]\nenabled = true\nbase_url = \"https://{tenant}.crm.dynamics.com\"\n\
                 token_url = \"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token\"\nclient_id = \"app-{tenant}\"\n"
            ),
        );
        write(
            root.join(format!("etc/cosell-sync/{tenant}/mappings/dynamics.toml")),
            &format!("# the mapping of {tenant}\n{shipped}"),
        );
        write(
            root.join(format!(
                "etc/credstore/cosell-sync.{tenant}.dynamics_client_secret"
            )),
            &format!("secret-of-{tenant}\n"),
        );
        write(
            root.join(format!(
                "etc/credstore/cosell-sync.{tenant}.partner_center_refresh_token"
            )),
            &format!("refresh-of-{tenant}"),
        );
    }
    // Another tenant's credentials in the store are not this one's.
    write(
        root.join("etc/credstore/cosell-sync.salesforce_client_secret"),
        "single-unit-secret",
    );

    for (tenant, port) in [("acme", 9471), ("globex", 9472)] {
        let settings = config::load(&start(&unit, root, tenant)).unwrap();
        assert_eq!(
            settings
                .dynamics
                .client_secret
                .as_ref()
                .unwrap()
                .expose_secret(),
            format!("secret-of-{tenant}")
        );
        assert_eq!(
            settings
                .partner_center
                .refresh_token
                .as_ref()
                .unwrap()
                .expose_secret(),
            format!("refresh-of-{tenant}")
        );
        assert!(settings.salesforce.client_secret.is_none());
        assert_eq!(
            settings.state.path,
            root.join(format!("var/lib/cosell-sync/{tenant}/cosell-sync.db"))
        );
        assert_eq!(settings.server.listen.port(), port);
        let (text, origin) = settings.mapping_source(CrmKind::Dynamics).unwrap();
        assert!(
            text.starts_with(&format!("# the mapping of {tenant}\n")),
            "{origin}"
        );
        assert!(
            origin.contains(&format!("cosell-sync/{tenant}/mappings/dynamics.toml")),
            "{origin}"
        );
    }
}
