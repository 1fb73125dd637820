use super::*;
use secrecy::ExposeSecret;

fn with_file(text: &str) -> (tempfile::TempDir, Sources) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cosell-sync.toml");
    std::fs::write(&path, text).unwrap();
    (
        dir,
        Sources {
            file: Some(path),
            ..Default::default()
        },
    )
}

#[test]
fn built_in_defaults_match_the_design() {
    let s = Settings::defaults().unwrap();
    assert_eq!(s.state.path, PathBuf::from("cosell-sync.db"));
    assert_eq!(s.state.lock_wait, Duration::from_secs(10));
    assert_eq!(s.sync.interval, Duration::from_secs(60));
    assert_eq!(s.sync.overlap, Duration::from_secs(600));
    assert_eq!(s.sync.full_reconcile_every, Duration::from_secs(6 * 3600));
    assert_eq!(s.sync.expiry_days, 14);
    assert_eq!(s.sync.microsoft_decision_days, 14);
    assert_eq!(s.sync.max_attempts, 5);
    assert_eq!(s.sync.conflict, ConflictPolicy::Mapping);
    assert_eq!(s.server.listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(
        s.partner_center.base_url.as_str(),
        "https://api.partner.microsoft.com/"
    );
    assert_eq!(s.partner_center.page_size, 100);
    assert_eq!(s.dynamics.api_version, "v9.2");
    assert_eq!(s.dynamics.batch_size, 100);
    assert_eq!(s.salesforce.api_version, "v62.0");
    assert_eq!(s.salesforce.batch_size, 200);
    assert_eq!(s.salesforce.auth, SalesforceAuth::ClientCredentials);
    assert!(!s.dynamics.enabled && !s.salesforce.enabled);
    assert_eq!(s.config_dir, None);
    assert_eq!(s.mapping_path(&s.dynamics.mapping), None);
}

#[test]
fn every_default_key_is_commented() {
    // Each key line in default.toml is preceded by a comment line or is
    // self-explanatory in its section; at least the file documents secrets.
    for (section, key) in SECRET_KEYS {
        assert!(
            DEFAULT_TOML.contains(&format!("{section}.{key}")),
            "{section}.{key}"
        );
    }
    assert!(
        DEFAULT_TOML
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 30
    );
}

#[test]
fn file_then_environment_override_defaults() {
    let (_dir, mut sources) = with_file("[sync]\ninterval = \"5m\"\nmax_attempts = 3\n");
    sources
        .env
        .insert("COSELL_SYNC__SYNC__INTERVAL".into(), "30s".into());
    sources
        .env
        .insert("COSELL_SYNC__DYNAMICS__ENABLED".into(), "true".into());
    sources.env.insert(
        "COSELL_SYNC__DYNAMICS__TOKEN_URL".into(),
        "https://login.example.test/t/oauth2/v2.0/token".into(),
    );
    sources
        .env
        .insert("COSELL_SYNC__PARTNER_CENTER__PAGE_SIZE".into(), "50".into());
    let s = load(&sources).unwrap();
    assert_eq!(s.sync.interval, Duration::from_secs(30));
    assert_eq!(s.sync.max_attempts, 3);
    assert!(s.dynamics.enabled);
    assert_eq!(s.partner_center.page_size, 50);
    assert_eq!(
        s.origin("sync.interval"),
        "environment variable COSELL_SYNC__SYNC__INTERVAL"
    );
    assert!(
        s.origin("sync.max_attempts")
            .ends_with("cosell-sync.toml:3")
    );
    assert_eq!(s.origin("sync.overlap"), "built-in defaults");
}

#[test]
fn the_store_lock_wait_is_a_duration_that_may_be_zero() {
    let (_dir, mut sources) = with_file("[state]\nlock_wait = \"0s\"\n");
    assert_eq!(load(&sources).unwrap().state.lock_wait, Duration::ZERO);
    sources
        .env
        .insert("COSELL_SYNC__STATE__LOCK_WAIT".into(), "1m 30s".into());
    let s = load(&sources).unwrap();
    assert_eq!(s.state.lock_wait, Duration::from_secs(90));
    assert!(
        s.render().contains("lock_wait = \"1m 30s\""),
        "{}",
        s.render()
    );
    sources
        .env
        .insert("COSELL_SYNC__STATE__LOCK_WAIT".into(), "a while".into());
    let err = load(&sources).unwrap_err();
    assert_eq!(err.key(), Some("state.lock_wait"));
    let msg = err.to_string();
    assert!(msg.contains("COSELL_SYNC__STATE__LOCK_WAIT"), "{msg}");
    assert!(msg.contains("is not a duration"), "{msg}");
}

#[test]
fn a_misspelled_key_is_named_with_its_line() {
    let (_dir, sources) = with_file("[sync]\n\nintervall = \"5m\"\n");
    let err = load(&sources).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("sync.intervall"));
    assert!(msg.contains("unknown key `sync.intervall`"), "{msg}");
    assert!(msg.contains("cosell-sync.toml:3"), "{msg}");
    assert!(msg.contains("did you mean `interval`"), "{msg}");
}

#[test]
fn an_unknown_section_and_env_key_are_errors() {
    let (_dir, sources) = with_file("[synk]\ninterval = \"5m\"\n");
    let err = load(&sources).unwrap_err();
    assert_eq!(err.key(), Some("synk"));

    let mut sources = Sources::default();
    sources
        .env
        .insert("COSELL_SYNC__SYNC__INTERVALL".into(), "5m".into());
    let err = load(&sources).unwrap_err();
    assert!(
        err.to_string()
            .contains("environment variable COSELL_SYNC__SYNC__INTERVALL")
    );
    assert_eq!(err.key(), Some("sync.intervall"));
}

#[test]
fn invalid_values_name_the_key_and_the_source() {
    let cases = [
        ("[sync]\ninterval = \"-5s\"\n", "sync.interval"),
        ("[sync]\ninterval = \"0s\"\n", "sync.interval"),
        ("[sync]\nmax_attempts = 0\n", "sync.max_attempts"),
        ("[sync]\nmax_attempts = \"many\"\n", "sync.max_attempts"),
        (
            "[partner_center]\nbase_url = \"not a url\"\n",
            "partner_center.base_url",
        ),
        (
            "[partner_center]\npage_size = 1000\n",
            "partner_center.page_size",
        ),
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[sync]\nconflict = \"mine\"\n", "sync.conflict"),
        ("[salesforce]\nauth = \"password\"\n", "salesforce.auth"),
        (
            "[dynamics]\napi_version = \"9.2\"\n",
            "dynamics.api_version",
        ),
    ];
    for (text, key) in cases {
        let (_dir, sources) = with_file(text);
        let err = load(&sources).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text}: {err}");
        assert!(
            err.to_string().contains("cosell-sync.toml"),
            "{text}: {err}"
        );
    }
    // A default that only becomes wrong once a CRM is enabled names its origin too.
    let (_dir, sources) = with_file("[dynamics]\nenabled = true\n");
    let err = load(&sources).unwrap_err();
    assert_eq!(err.key(), Some("dynamics.token_url"));
    assert!(err.to_string().contains("from built-in defaults"), "{err}");
    assert!(err.to_string().contains("<tenant>"), "{err}");
}

#[test]
fn secrets_come_from_env_or_credentials_and_never_from_the_file() {
    let (_dir, sources) = with_file("[dynamics]\nclient_secret = \"hunter2\"\n");
    let err = load(&sources).unwrap_err();
    assert!(matches!(err, ConfigError::SecretInFile { .. }));
    assert!(!err.to_string().contains("hunter2"));
    assert!(
        err.to_string()
            .contains("COSELL_SYNC__DYNAMICS__CLIENT_SECRET")
    );

    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("salesforce_client_secret"), "sf-secret\n").unwrap();
    std::fs::write(creds.path().join("dynamics_client_secret"), "from-file").unwrap();
    let mut sources = Sources {
        credentials_dir: Some(creds.path().to_path_buf()),
        ..Default::default()
    };
    sources.env.insert(
        "COSELL_SYNC__DYNAMICS__CLIENT_SECRET".into(),
        "from-env".into(),
    );
    let s = load(&sources).unwrap();
    assert_eq!(
        s.salesforce.client_secret.as_ref().unwrap().expose_secret(),
        "sf-secret"
    );
    assert_eq!(
        s.dynamics.client_secret.as_ref().unwrap().expose_secret(),
        "from-env"
    );
    assert!(s.partner_center.refresh_token.is_none());

    let shown = format!("{s:?}\n{}", s.render());
    assert!(
        !shown.contains("sf-secret") && !shown.contains("from-env"),
        "{shown}"
    );
    assert!(s.render().contains("# client_secret: set (redacted)"));
}

#[test]
fn rendered_settings_load_back_to_the_same_values() {
    let mut sources = Sources::default();
    sources
        .env
        .insert("COSELL_SYNC__SYNC__OVERLAP".into(), "15m".into());
    let s = load(&sources).unwrap();
    let (_dir, again) = with_file(&s.render());
    let t = load(&again).unwrap();
    assert_eq!(t.render(), s.render());
    assert_eq!(t.sync.overlap, Duration::from_secs(900));
}

#[test]
fn readiness_names_missing_credentials_for_enabled_systems() {
    let mut sources = Sources::default();
    for (k, v) in [
        ("COSELL_SYNC__SALESFORCE__ENABLED", "true"),
        ("COSELL_SYNC__SALESFORCE__AUTH", "jwt_bearer"),
        ("COSELL_SYNC__PARTNER_CENTER__CLIENT_ID", "abc"),
    ] {
        sources.env.insert(k.into(), v.into());
    }
    let s = load(&sources).unwrap();
    let keys: Vec<_> = s.readiness_problems().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        vec![
            "salesforce.client_id",
            "salesforce.username",
            "salesforce.private_key"
        ]
    );
}

#[test]
fn salesforce_limit_and_account_settings_are_validated() {
    let s = Settings::defaults().unwrap();
    assert_eq!(s.salesforce.limit_pause, Duration::from_secs(15 * 60));
    assert_eq!(s.salesforce.limit_warn_percent, 80);
    assert_eq!(
        s.salesforce.account_match,
        AccountMatch::DunsThenNamePostalCode
    );
    assert_eq!(s.salesforce.duns_field, "DunsNumber");

    let (_dir, sources) = with_file(
        "[salesforce]\nlimit_pause = \"1h\"\nlimit_warn_percent = 95\naccount_match = \"none\"\nduns_field = \"\"\n",
    );
    let s = load(&sources).unwrap();
    assert_eq!(s.salesforce.limit_pause, Duration::from_secs(3600));
    assert_eq!(s.salesforce.limit_warn_percent, 95);
    assert_eq!(s.salesforce.account_match, AccountMatch::None);
    assert_eq!(s.salesforce.duns_field, "");

    for (text, key) in [
        (
            "[salesforce]\nlimit_pause = \"0s\"\n",
            "salesforce.limit_pause",
        ),
        (
            "[salesforce]\nlimit_warn_percent = 0\n",
            "salesforce.limit_warn_percent",
        ),
        (
            "[salesforce]\nlimit_warn_percent = 101\n",
            "salesforce.limit_warn_percent",
        ),
        (
            "[salesforce]\naccount_match = \"fuzzy\"\n",
            "salesforce.account_match",
        ),
        (
            "[salesforce]\nduns_field = \"Duns' OR\"\n",
            "salesforce.duns_field",
        ),
    ] {
        let (_dir, sources) = with_file(text);
        let err = load(&sources).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text}: {err}");
    }
}

#[test]
fn dynamics_scope_is_derived_from_the_organization_url() {
    let s = Settings::defaults().unwrap();
    assert_eq!(
        s.dynamics.effective_scope(),
        "https://contoso.crm.dynamics.com/.default"
    );
}

#[test]
fn dynamics_read_and_account_settings_are_typed_and_checked() {
    let s = Settings::defaults().unwrap();
    assert!(!s.dynamics.change_tracking);
    assert_eq!(
        s.dynamics.account_match,
        AccountMatch::DunsThenNamePostalCode
    );
    assert_eq!(s.dynamics.page_size, 200);

    let (_dir, sources) = with_file(
        "[dynamics]\nchange_tracking = true\naccount_match = \"name_postal_code\"\npage_size = 5000\n",
    );
    let s = load(&sources).unwrap();
    assert!(s.dynamics.change_tracking);
    assert_eq!(s.dynamics.account_match, AccountMatch::NamePostalCode);
    assert_eq!(s.dynamics.page_size, 5000);
    assert!(s.render().contains("account_match = \"name_postal_code\""));

    for (text, key) in [
        (
            "[dynamics]\naccount_match = \"duns\"\n",
            "dynamics.account_match",
        ),
        ("[dynamics]\npage_size = 0\n", "dynamics.page_size"),
        ("[dynamics]\npage_size = 5001\n", "dynamics.page_size"),
    ] {
        let (_dir, sources) = with_file(text);
        let err = load(&sources).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text}: {err}");
    }
}

#[test]
fn mapping_paths_are_relative_to_the_config_file() {
    let (dir, sources) = with_file("");
    let s = load(&sources).unwrap();
    assert_eq!(
        s.mapping_path(&s.salesforce.mapping),
        Some(dir.path().join("mappings/salesforce.toml"))
    );
}

#[test]
fn the_merge_keeps_each_values_origin_for_type_errors() {
    // A wrong type in the file: the `config` crate's error carries the file and line.
    let (_dir, sources) = with_file("[sync]\n# how often\n\nmax_attempts = \"many\"\n");
    let err = load(&sources).unwrap_err();
    assert_eq!(err.key(), Some("sync.max_attempts"));
    assert!(err.to_string().contains("cosell-sync.toml:4"), "{err}");

    // The same key from the environment wins over the file, and is named so.
    let (_dir, mut sources) = with_file("[sync]\nmax_attempts = 3\n");
    sources
        .env
        .insert("COSELL_SYNC__SYNC__MAX_ATTEMPTS".into(), "lots".into());
    let err = load(&sources).unwrap_err();
    assert_eq!(err.key(), Some("sync.max_attempts"));
    assert!(
        err.to_string()
            .contains("from environment variable COSELL_SYNC__SYNC__MAX_ATTEMPTS"),
        "{err}"
    );
    assert!(!err.to_string().contains("cosell-sync.toml"), "{err}");
}

#[test]
fn keys_are_found_on_their_line_however_the_toml_spells_them() {
    for (text, line) in [
        ("# settings\nsync.intervall = \"5m\"\n", 2),
        (
            "[state]\npath = \"x.db\"\n\n[sync]\n\"intervall\" = \"5m\"\n",
            5,
        ),
        ("sync = { interval = \"5m\",\n  intervall = \"1m\" }\n", 2),
    ] {
        let (_dir, sources) = with_file(text);
        let err = load(&sources).unwrap_err();
        assert_eq!(err.key(), Some("sync.intervall"), "{text}");
        assert!(
            err.to_string()
                .contains(&format!("cosell-sync.toml:{line}")),
            "{text}: {err}"
        );
    }
    // A value's origin, too: a secret written on line 3.
    let (_dir, sources) = with_file("[salesforce]\nenabled = true\nprivate_key = \"-----BEGIN\"\n");
    let err = load(&sources).unwrap_err();
    assert!(matches!(err, ConfigError::SecretInFile { .. }));
    assert!(err.to_string().contains("cosell-sync.toml:3"), "{err}");
    assert!(!err.to_string().contains("BEGIN"), "{err}");
}
