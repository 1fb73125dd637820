//! `health`: asks a running daemon's `/readyz` (or `/healthz`) and exits 0
//! only on 200 — the container image's HEALTHCHECK, where there is no curl.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::Settings;
use crate::http::{ClientSettings, build_client};

use super::CommandError;

/// Where the daemon of `settings` answers: `server.listen`, with an
/// every-interface address (`0.0.0.0`, `::`) asked on loopback.
pub fn health_address(settings: &Settings) -> SocketAddr {
    let listen = settings.server.listen;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `health [--live]`: 0 when `/readyz` (`/healthz` with `live`) answers 200,
/// else 1 with the endpoint's answer.
pub async fn health(settings: &Settings, live: bool) -> Result<String, CommandError> {
    let path = if live { "healthz" } else { "readyz" };
    let url = format!("http://{}/{path}", health_address(settings));
    let client = build_client(&ClientSettings::with_timeout(Duration::from_secs(5)))
        .map_err(|e| CommandError::Failed(format!("cannot build an HTTP client: {e}")))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| CommandError::Failed(format!("{url}: no answer ({e})")))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(format!("{}\n", body.trim_end()))
    } else {
        Err(CommandError::Failed(format!(
            "{url} answered {}: {}",
            status.as_u16(),
            body.trim()
        )))
    }
}
