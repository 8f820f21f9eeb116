//! Unit tests of the configuration: defaults, the environment's names, the layers' order,
//! and what a bad file or variable says (and never shows).

use std::path::Path;

use super::env::{Target, schema, target};
use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::builtin_with_env(vars(pairs))
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

#[test]
fn secrets_come_from_their_own_variables_and_stay_out_of_debug() {
    let s = with_env(&[
        ("PAYRUN_DATABASE_URL", "postgres://u@h/db"),
        ("DOTS_API_KEY", "topsecret"),
        ("DOTS_WEBHOOK_SECRET", "whsec_t0psecret"),
        ("PAYRUN_DOTS_API_KEY", "generic-k3y"),
        ("PAYRUN_DOTS_WEBHOOK_SECRET", "generic-wh"),
        (
            "PAYRUN_DASHBOARD_TOKEN",
            "t0ken-0123456789abcdef0123456789ab",
        ),
        ("PAYRUN_CONCURRENCY", "3"),
    ])
    .unwrap();
    assert_eq!(s.database.url, "postgres://u@h/db");
    assert_eq!(s.worker.concurrency, 3);
    assert_eq!(s.dots.api_key.expose(), "topsecret");
    assert_eq!(
        s.dots.webhook_secret.as_ref().map(Secret::expose),
        Some("whsec_t0psecret")
    );
    let shown = format!("{s:?}");
    for secret in ["topsecret", "t0psecret", "generic", "t0ken"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(with_env(&[]).unwrap().dots.webhook_secret.is_none());
}

/// The table of names: canonical, aliases, other programs' variables, unknown keys.
#[test]
fn environment_names_map_to_keys() {
    let key = |s: &str, k: &str, alias| Target::Key {
        section: s.into(),
        key: k.into(),
        alias,
    };
    let unknown = |s: &str, k: &str| Target::UnknownKey {
        section: s.into(),
        key: k.into(),
    };
    let cases = [
        (
            "PAYRUN_WORKER_BACKOFF_MAX_SECS",
            key("worker", "backoff_max_secs", false),
        ),
        (
            "PAYRUN_WORKER_CONCURRENCY",
            key("worker", "concurrency", false),
        ),
        (
            "PAYRUN_WORKER_POLL_SCHEDULE_SECS",
            key("worker", "poll_schedule_secs", false),
        ),
        ("PAYRUN_DATABASE_URL", key("database", "url", false)),
        (
            "PAYRUN_DOTS_TIMEOUT_SECS",
            key("dots", "timeout_secs", false),
        ),
        ("PAYRUN_DOTS_BASE_URL", key("dots", "base_url", false)),
        (
            "PAYRUN_DOTS_RATE_LIMIT_RPS",
            key("dots", "rate_limit_rps", false),
        ),
        (
            "PAYRUN_LIMITS_MAX_ITEM_CENTS",
            key("limits", "max_item_cents", false),
        ),
        ("PAYRUN_SCHEDULES_DIR", key("schedules", "dir", false)),
        (
            "PAYRUN_SCHEDULES_CATCH_UP",
            key("schedules", "catch_up", false),
        ),
        (
            "PAYRUN_DASHBOARD_SECURE_COOKIE",
            key("dashboard", "secure_cookie", false),
        ),
        ("DOTS_BASE_URL", key("dots", "base_url", true)),
        ("DOTS_CLIENT_ID", key("dots", "client_id", true)),
        (
            "PAYRUN_DOTS_RATE_LIMIT",
            key("dots", "rate_limit_rps", true),
        ),
        ("PAYRUN_CONCURRENCY", key("worker", "concurrency", true)),
        ("PAYRUN_POLL_CRON", key("worker", "poll_cron", true)),
        (
            "PAYRUN_MAX_ITEM_CENTS",
            key("limits", "max_item_cents", true),
        ),
        (
            "PAYRUN_MAX_BATCH_CENTS",
            key("limits", "max_batch_cents", true),
        ),
        (
            "PAYRUN_APPROVAL_THRESHOLD_CENTS",
            key("limits", "approval_threshold_cents", true),
        ),
        // Other programs' (or other parts of payrun's) variables.
        ("PAYRUN_ENV", Target::NotConfig),
        ("PAYRUN_HEALTH_LISTEN", Target::NotConfig),
        ("PAYRUN_TEST_PG_URL", Target::NotConfig),
        ("PAYRUN_CHAOS_ITEMS", Target::NotConfig),
        ("PAYRUN_EVENTS_RETENTION_DAYS", Target::NotConfig),
        ("PAYRUN_DASHBOARD_TOKEN", Target::NotConfig),
        ("DOTS_API_KEY", Target::NotConfig),
        ("DOTS_WEBHOOK_SECRET", Target::NotConfig),
        ("HOME", Target::NotConfig),
        ("payrun_worker_concurrency", Target::NotConfig),
        ("PAYRUN_worker_concurrency", Target::NotConfig),
        ("PAYRUN_WORKER_", Target::NotConfig),
        // A known section, no such key: warned about and ignored.
        ("PAYRUN_WORKER_NOPE", unknown("worker", "nope")),
        ("PAYRUN_DOTS_API_KEY", unknown("dots", "api_key")),
        (
            "PAYRUN_DOTS_WEBHOOK_SECRET",
            unknown("dots", "webhook_secret"),
        ),
    ];
    for (var, want) in cases {
        assert_eq!(target(var, schema()), want, "{var}");
    }
}

/// Every key of every section is known to the schema (so settable by its canonical name) and
/// every section refuses unknown keys; every alias names a real key.
#[test]
fn every_section_lists_its_keys_and_every_alias_names_one() {
    let builtin: toml::Table = toml::from_str(BUILTIN).unwrap();
    let schema = schema();
    assert_eq!(
        schema.sections.keys().collect::<Vec<_>>(),
        builtin.keys().collect::<Vec<_>>()
    );
    for (section, keys) in &schema.sections {
        let keys = keys
            .as_ref()
            .unwrap_or_else(|| panic!("[{section}] lacks #[serde(deny_unknown_fields)]"));
        for k in builtin[section.as_str()].as_table().unwrap().keys() {
            assert!(keys.contains(k), "{section}.{k}");
            let var = format!("PAYRUN_{}_{}", section, k).to_ascii_uppercase();
            assert!(matches!(target(&var, schema), Target::Key { .. }), "{var}");
        }
    }
    for (alias, path) in ALIASES {
        let (s, k) = path.split_once('.').unwrap();
        let keys = schema.sections[s].as_ref().unwrap();
        assert!(keys.iter().any(|x| x == k), "{alias} -> {path}");
    }
}

#[test]
fn every_key_can_be_set_by_its_canonical_name() {
    let s = with_env(&[
        ("PAYRUN_WORKER_BACKOFF_MAX_SECS", "9"),
        ("PAYRUN_WORKER_POLL_SCHEDULE_SECS", "[5, 10,20]"),
        ("PAYRUN_WORKER_ONBOARDING_STEPS", "[compliance, \"kyc\"]"),
        ("PAYRUN_DOTS_RATE_LIMIT_RPS", "2.5"),
        ("PAYRUN_DOTS_CLIENT_ID", "12345"),
        ("PAYRUN_LIMITS_MAX_BATCH_CENTS", "-1"),
        ("PAYRUN_SCHEDULES_CATCH_UP", "false"),
        ("PAYRUN_SCHEDULES_DIR", "0"),
        ("PAYRUN_WORKER_POLL_CRON", "*/5 * * * * *"),
    ])
    .unwrap();
    assert_eq!(s.worker.backoff_max_secs, 9);
    assert_eq!(s.worker.poll_schedule_secs, vec![5, 10, 20]);
    assert_eq!(s.worker.onboarding_steps, vec!["compliance", "kyc"]);
    assert_eq!(s.dots.rate_limit_rps, 2.5);
    // Text stays text where the key is text, even when it looks like a number.
    assert_eq!(s.dots.client_id, "12345");
    assert_eq!(s.schedules.dir, "0");
    assert_eq!(s.limits.max_batch_cents, -1);
    assert!(!s.schedules.catch_up);
    assert_eq!(s.worker.poll_cron, "*/5 * * * * *");
}

#[test]
fn a_canonical_name_wins_over_its_alias() {
    let s = with_env(&[
        ("PAYRUN_CONCURRENCY", "3"),
        ("PAYRUN_WORKER_CONCURRENCY", "5"),
        ("DOTS_BASE_URL", "http://old"),
        ("PAYRUN_DOTS_BASE_URL", "http://new"),
    ])
    .unwrap();
    assert_eq!(s.worker.concurrency, 5);
    assert_eq!(s.dots.base_url, "http://new");
    // And the alias alone still works; a bad alias value is not hidden by a good canonical one.
    assert_eq!(
        with_env(&[("PAYRUN_CONCURRENCY", "3")])
            .unwrap()
            .worker
            .concurrency,
        3
    );
}

#[test]
fn variables_that_are_not_settings_are_ignored() {
    let s = with_env(&[
        ("PAYRUN_HEALTH_LISTEN", "0.0.0.0:9090"),
        ("PAYRUN_WORKER_NO_SUCH_KEY", "x"),
        ("PAYRUN_DASHBOARD_TOKEN", "t0ken"),
        ("PAYRUN_EVENTS_X", "[unparsed"),
    ])
    .unwrap();
    assert_eq!(s.worker.concurrency, Settings::builtin().worker.concurrency);
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

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
