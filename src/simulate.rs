//! Running the daemon against the simulator in-process: its settings and its
//! clock. The simulator knows nothing of the daemon's types; this is the glue.

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::config::Sources;
use crate::sim::SimHandle;
use crate::sync::Clock;

/// Where the daemon's settings come from when it runs against `sim`
/// in-process: the config file the simulator prints, written into `dir`,
/// its fake secrets, and a state store in `dir`.
pub fn daemon_sources(sim: &SimHandle, dir: &Path) -> io::Result<Sources> {
    let file = dir.join("cosell-sync.toml");
    std::fs::write(&file, sim.daemon_config())?;
    let mut env: std::collections::BTreeMap<String, String> = sim
        .daemon_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.insert(
        "COSELL_SYNC__STATE__PATH".into(),
        dir.join("state.db").display().to_string(),
    );
    Ok(Sources {
        file: Some(file),
        env,
        credentials_dir: None,
    })
}

/// The simulator's movable clock as the engine's clock (day 15 without waiting).
pub fn clock(sim: &SimHandle) -> Arc<dyn Clock> {
    let clock = sim.clock();
    Arc::new(move || clock.now())
}
