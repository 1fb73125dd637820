//! `cosell-sync health`: the probe a container HEALTHCHECK runs (there is no
//! curl in a distroless image), and the image definition that uses it.

use std::path::Path;

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod cli_support;
use cli_support::run;

async fn daemon(readyz: u16, healthz: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/readyz"))
        .respond_with(
            ResponseTemplate::new(readyz)
                .set_body_string(format!("{{\"ready\":{}}}", readyz == 200)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/healthz"))
        .respond_with(ResponseTemplate::new(healthz).set_body_string("{\"healthy\":true}"))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn health_exits_0_only_when_the_daemon_answers_200() {
    let ready = daemon(200, 200).await;
    let listen = ("COSELL_SYNC__SERVER__LISTEN", ready.address().to_string());
    let (code, out, err) = run(&["health"], std::slice::from_ref(&listen)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "{\"ready\":true}\n");

    let waiting = daemon(503, 200).await;
    let listen = ("COSELL_SYNC__SERVER__LISTEN", waiting.address().to_string());
    let (code, _, err) = run(&["health"], std::slice::from_ref(&listen)).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/readyz answered 503: {\"ready\":false}"),
        "{err}"
    );
    // --live asks /healthz: the loop runs, even though it is not ready.
    let (code, out, err) = run(&["health", "--live"], &[listen]).await;
    assert_eq!(code, 0, "{out}{err}");

    // Nothing listening: 1, naming the address.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (code, _, err) = run(
        &["health"],
        &[("COSELL_SYNC__SERVER__LISTEN", format!("127.0.0.1:{port}"))],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}/readyz: no answer")),
        "{err}"
    );
}

/// `KEY ["a", "b"]` instructions of the Containerfile, JSON array parsed.
fn exec_form(containerfile: &str, instruction: &str) -> Vec<String> {
    let joined = containerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with(instruction))
        .unwrap_or_else(|| panic!("no {instruction}"));
    let at = line.find('[').unwrap();
    serde_json::from_str(&line[at..]).unwrap()
}

#[tokio::test]
async fn the_container_image_runs_as_non_root_and_its_healthcheck_asks_readyz() {
    let file = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/Containerfile"),
    )
    .unwrap();
    let last_from = file.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(last_from.contains("distroless"), "{last_from}");
    let user = file.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(file.contains("COSELL_SYNC__SERVER__LISTEN=0.0.0.0:9464"));
    assert!(file.contains("EXPOSE 9464"));

    // The HEALTHCHECK command, run with this build's binary against a ready
    // daemon on the image's port (here, the mock's).
    let check = exec_form(&file, "HEALTHCHECK");
    assert_eq!(check[0], "/usr/bin/cosell-sync");
    let entry = exec_form(&file, "ENTRYPOINT");
    assert_eq!(entry[0], "/usr/bin/cosell-sync");
    let ready = daemon(200, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("cosell-sync.toml");
    std::fs::write(&settings, "[log]\nformat = \"json\"\n").unwrap();
    let args: Vec<String> = check[1..]
        .iter()
        .map(|a| {
            if a == "/etc/cosell-sync/cosell-sync.toml" {
                settings.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    assert!(args.iter().any(|a| a == "health"), "{args:?}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(
        &args,
        &[("COSELL_SYNC__SERVER__LISTEN", ready.address().to_string())],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
}
