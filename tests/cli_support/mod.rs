//! The binary as an operator runs it: a clean environment (none of the
//! caller's `COSELL_SYNC*` settings, log filter or credentials), and, for
//! the tests that need one, a simulator with its settings file and a state
//! store in a temp dir.

#![allow(dead_code)]

/// Runs `cosell-sync ARGS` with only `envs` set; returns (exit code, stdout, stderr).
pub async fn run<K: AsRef<str>, V: AsRef<str>>(
    args: &[&str],
    envs: &[(K, V)],
) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cosell-sync"));
    for (k, _) in std::env::vars() {
        if k.starts_with("COSELL_SYNC") || k == "RUST_LOG" || k == "CREDENTIALS_DIRECTORY" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k.as_ref(), v.as_ref());
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `envs` plus one more variable.
pub fn with(envs: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut out = envs.to_vec();
    out.push((key.to_owned(), value.to_owned()));
    out
}

/// What the binary needs to run against a simulator: the settings file the
/// simulator prints (`cfg`), its secrets and a state store in `dir` (`envs`).
#[cfg(feature = "sim")]
pub struct SimCli {
    pub dir: tempfile::TempDir,
    pub cfg: String,
    pub state: std::path::PathBuf,
    pub envs: Vec<(String, String)>,
}

#[cfg(feature = "sim")]
impl SimCli {
    /// `name`.toml and `name`.db in a new temp dir.
    pub fn new(sim: &cosell_sync::sim::SimHandle, name: &str) -> SimCli {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, sim.daemon_config()).unwrap();
        SimCli::with_settings(sim, dir, &file, name)
    }

    /// An existing settings file, the simulator's secrets and `name`.db in `dir`.
    pub fn with_settings(
        sim: &cosell_sync::sim::SimHandle,
        dir: tempfile::TempDir,
        settings: &std::path::Path,
        name: &str,
    ) -> SimCli {
        let state = dir.path().join(format!("{name}.db"));
        let mut envs: Vec<(String, String)> = sim
            .daemon_env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        envs.push((
            "COSELL_SYNC__STATE__PATH".into(),
            state.display().to_string(),
        ));
        SimCli {
            cfg: settings.display().to_string(),
            dir,
            state,
            envs,
        }
    }
}
