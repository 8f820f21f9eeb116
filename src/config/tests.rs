//! Unit tests of the configuration: defaults, the layers' order, and what a bad file or
//! variable says (and never shows). The environment's names: `env_tests`.

use std::path::Path;

use super::*;

pub(super) fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn with_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::builtin_with_env(vars(pairs))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn builtin_defaults_use_embedded_sqlite() {
    let s = Settings::builtin();
    assert!(s.database.url.starts_with("sqlite://"));
    assert_eq!(s.worker.onboarding_steps, vec!["compliance"]);
}

#[test]
fn secure_cookie_auto_means_secure_unless_listening_on_loopback() {
    assert_eq!(
        Settings::builtin().dashboard.secure_cookie,
        SecureCookie::Auto
    );
    for lo in [
        "127.0.0.1:8080",
        "127.1.2.3:80",
        "[::1]:8080",
        "localhost:8080",
        "::1",
    ] {
        assert!(!SecureCookie::Auto.resolve(lo), "{lo}");
        assert!(SecureCookie::Always.resolve(lo), "{lo}");
    }
    for public in [
        "0.0.0.0:8080",
        "[::]:8080",
        "10.0.0.5:8080",
        "payrun.example:443",
    ] {
        assert!(SecureCookie::Auto.resolve(public), "{public}");
        assert!(!SecureCookie::Never.resolve(public), "{public}");
    }
    let t: DashboardSettings = toml::from_str("secure_cookie = false").unwrap();
    assert_eq!(t.secure_cookie, SecureCookie::Never);
    let t: DashboardSettings = toml::from_str("secure_cookie = \"auto\"").unwrap();
    assert_eq!(t.secure_cookie, SecureCookie::Auto);
    assert!(toml::from_str::<DashboardSettings>("secure_cookie = \"maybe\"").is_err());
    for (raw, want) in [
        ("true", SecureCookie::Always),
        ("false", SecureCookie::Never),
        ("auto", SecureCookie::Auto),
    ] {
        let s = with_env(&[("PAYRUN_DASHBOARD_SECURE_COOKIE", raw)]).unwrap();
        assert_eq!(s.dashboard.secure_cookie, want, "{raw}");
    }
    let bad = with_env(&[("PAYRUN_DASHBOARD_SECURE_COOKIE", "maybe")]).unwrap_err();
    assert!(
        bad.to_string()
            .starts_with("invalid value for PAYRUN_DASHBOARD_SECURE_COOKIE:"),
        "{bad}"
    );
}

#[test]
fn the_database_password_stays_out_of_debug() {
    let mut s = Settings::builtin();
    for url in [
        "postgres://u:s3cretpw@127.0.0.1:notaport/db",
        "postgres://u:s3cretpw@[::1]:5432/db",
        "postgres://u:pa@ss#word@host/db",
    ] {
        s.database.url = url.into();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cretpw") && !shown.contains("ss#word"),
            "{shown}"
        );
        assert!(shown.contains("u:***@"), "{shown}");
    }
}

/// The table of names: canonical, aliases, other programs' variables, unknown keys.
/// Every key of every section is known to the schema (so settable by its canonical name) and
/// every section refuses unknown keys; every alias names a real key.
/// Built-in < config/default.toml < config/$PAYRUN_ENV.toml < --config < environment.
#[test]
fn later_layers_win_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "default.toml",
        "[worker]\nconcurrency = 4\nlease_secs = 41\nfeed_ms = 41\nclaim_secs = 41\n",
    );
    write(
        d,
        "prod.toml",
        "[worker]\nconcurrency = 5\nlease_secs = 51\nfeed_ms = 51\n",
    );
    let extra = write(
        d,
        "extra.toml",
        "[worker]\nconcurrency = 6\nlease_secs = 61\n",
    );
    let load = |env: &[(&str, &str)]| Settings::load_with_env(d, Some(&extra), vars(env)).unwrap();

    let s = load(&[("PAYRUN_ENV", "prod")]);
    assert_eq!(
        (
            s.worker.concurrency,
            s.worker.lease_secs,
            s.worker.feed_ms,
            s.worker.claim_secs
        ),
        (6, 61, 51, 41)
    );
    assert_eq!(
        s.worker.heartbeat_secs,
        Settings::builtin().worker.heartbeat_secs
    );
    // Without PAYRUN_ENV, prod.toml is not read.
    assert_eq!(load(&[]).worker.feed_ms, 41);
    assert_eq!(load(&[("PAYRUN_CONCURRENCY", "7")]).worker.concurrency, 7);
    assert_eq!(
        load(&[("PAYRUN_WORKER_CONCURRENCY", "9")])
            .worker
            .concurrency,
        9
    );
    // A list from a file is replaced whole, not appended to.
    write(d, "default.toml", "[worker]\npoll_schedule_secs = [1]\n");
    assert_eq!(load(&[]).worker.poll_schedule_secs, vec![1]);
}

#[test]
fn an_unknown_key_in_a_file_is_an_error_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = |text: &str| {
        let f = write(dir.path(), "bad.toml", text);
        let e = Settings::load_with_env(dir.path(), Some(&f), vars(&[])).unwrap_err();
        assert!(matches!(e, ConfigError::File { .. }), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains(&f.display().to_string()), "{shown}");
        shown
    };
    let e = err("[worker]\nbackof_max_secs = 3\n");
    assert!(e.contains("unknown key `worker.backof_max_secs`"), "{e}");
    assert!(e.contains("backoff_max_secs"), "lists the known keys: {e}");
    let e = err("[dots]\napi_key = \"sk-s3cret-value\"\n");
    assert!(e.contains("unknown key `dots.api_key`"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    let e = err("[dots]\nwebhook_secret = \"whsec_s3cret\"\n");
    assert!(
        e.contains("`dots.webhook_secret`") && !e.contains("s3cret"),
        "{e}"
    );
    let e = err("[health]\nlisten = \"0.0.0.0:1\"\n");
    assert!(e.contains("unknown section [health]"), "{e}");
    // config/default.toml in the config directory is checked the same way.
    write(dir.path(), "default.toml", "[limits]\nmax_item = 1\n");
    let e = Settings::load_with_env(dir.path(), None, vars(&[])).unwrap_err();
    assert!(
        e.to_string().contains("default.toml") && e.to_string().contains("limits.max_item"),
        "{e}"
    );
}

#[test]
fn a_bad_value_names_its_variable_or_file_and_why() {
    let e = with_env(&[("PAYRUN_WORKER_CONCURRENCY", "x")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value for PAYRUN_WORKER_CONCURRENCY: `worker.concurrency` must be usize, not string \"x\""
    );
    let e = with_env(&[("PAYRUN_CONCURRENCY", "-1")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid value for PAYRUN_CONCURRENCY:"),
        "{e}"
    );
    let e = with_env(&[("PAYRUN_WORKER_POLL_SCHEDULE_SECS", "60,300")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid value for PAYRUN_WORKER_POLL_SCHEDULE_SECS:"),
        "{e}"
    );
    assert!(e.contains("[a,b]"), "{e}");
    let e = with_env(&[("PAYRUN_WORKER_POLL_SCHEDULE_SECS", "[60,x]")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker.poll_schedule_secs.1"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", "[worker]\nconcurrency = \"many\"\n");
    let e = Settings::load_with_env(dir.path(), Some(&f), vars(&[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid config in {}: `worker.concurrency` must be usize, not string \"many\"",
            f.display()
        )
    );
    // A value the environment replaces is never looked at.
    let s = Settings::load_with_env(dir.path(), Some(&f), vars(&[("PAYRUN_CONCURRENCY", "2")]));
    assert_eq!(s.unwrap().worker.concurrency, 2);
}

#[test]
fn errors_never_show_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    for text in [
        "[database]\nurl = \"postgres://u:s3cretpw@h/db\n",
        "[database]\nurl = [\"postgres://u:s3cretpw@h/db\"]\n",
        "[database]\nurl = \"postgres://u:s3cretpw@h/db\"\nport = 1\n",
    ] {
        let f = write(dir.path(), "db.toml", text);
        let e = Settings::load_with_env(dir.path(), Some(&f), vars(&[])).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cretpw"), "{shown}");
        assert!(shown.contains("url"), "{shown}");
    }
    for raw in [
        "[postgres://u:s3cretpw@h/db]",
        "{postgres://u:s3cretpw@h/db}",
    ] {
        match with_env(&[("PAYRUN_DATABASE_URL", raw)]) {
            Ok(s) => assert!(!format!("{s:?}").contains("s3cretpw")),
            Err(e) => {
                assert!(!format!("{e} {e:?}").contains("s3cretpw"), "{e}");
                assert!(
                    !e.to_string().contains("[a,b]"),
                    "no list hint for a text key: {e}"
                );
            }
        }
    }
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let e = Settings::load_with_env(
        Path::new("/nonexistent"),
        Some(Path::new("/nonexistent/x.toml")),
        vars(&[]),
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
}

#[test]
fn the_production_example_has_only_keys_payrun_knows() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml");
    let s = Settings::load_with_env(Path::new("/nonexistent"), Some(&example), vars(&[])).unwrap();
    assert!(s.database.url.starts_with("postgres://"));
    assert_eq!(s.dashboard.secure_cookie, SecureCookie::Always);
    // Production is recommended transfer batches.
    assert_eq!(s.dots.transfer_mode, TransferMode::Batch);
}

#[test]
fn dots_app_id_comes_from_the_environment_and_must_be_a_uuid() {
    let s = Settings::builtin();
    assert_eq!(s.dots.app_id, None);
    assert_eq!(s.dots.wallet_balance_unit, BalanceUnitSetting::Dollars);
    assert_eq!(s.funding.policy, FundingPolicy::Hold);
    let id = "5a5a0000-0000-4000-8000-000000000001";
    for var in ["DOTS_APP_ID", "PAYRUN_DOTS_APP_ID"] {
        let s = with_env(&[(var, id)]).unwrap();
        assert_eq!(
            s.dots.app_id.map(|u| u.to_string()).as_deref(),
            Some(id),
            "{var}"
        );
    }
    let bad = with_env(&[("DOTS_APP_ID", "app-1")])
        .unwrap_err()
        .to_string();
    assert!(bad.contains("DOTS_APP_ID"), "{bad}");
    let s = with_env(&[("PAYRUN_FUNDING_POLICY", "fit")]).unwrap();
    assert_eq!(s.funding.policy, FundingPolicy::Fit);
    assert!(with_env(&[("PAYRUN_FUNDING_POLICY", "some")]).is_err());
}

#[test]
fn transfers_go_one_by_one_unless_batch_mode_is_chosen_with_a_size_dots_accepts() {
    let s = Settings::builtin();
    assert_eq!(s.dots.transfer_mode, TransferMode::Single);
    assert_eq!(s.dots.transfer_batch_size.get(), 500);
    let s = with_env(&[
        ("PAYRUN_DOTS_TRANSFER_MODE", "batch"),
        ("PAYRUN_DOTS_TRANSFER_BATCH_SIZE", "5000"),
    ])
    .unwrap();
    assert_eq!(s.dots.transfer_mode, TransferMode::Batch);
    assert_eq!(s.dots.transfer_batch_size.get(), 5000);
    for bad in ["0", "5001", "-3", "many"] {
        let e = with_env(&[("PAYRUN_DOTS_TRANSFER_BATCH_SIZE", bad)])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid value for PAYRUN_DOTS_TRANSFER_BATCH_SIZE:"),
            "{bad}: {e}"
        );
    }
    let e = with_env(&[("PAYRUN_DOTS_TRANSFER_MODE", "bulk")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("PAYRUN_DOTS_TRANSFER_MODE"), "{e}");
}
