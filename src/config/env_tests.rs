//! Unit tests of the environment's names: which variable sets which key, aliases and their
//! precedence, variables that are no settings, and secrets.

use super::env::{Target, schema, target};
use super::tests::with_env;
use super::*;

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
        ("PAYRUN_EVENTS_URL", Target::NotConfig),
        ("PAYRUN_EVENTS_SECRET", Target::NotConfig),
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
        ("PAYRUN_DATABASE_MAX_CONNECTIONS", "6"),
    ])
    .unwrap();
    assert_eq!(s.database.max_connections.get(), 6);
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
fn a_pool_of_no_connections_is_refused_naming_its_variable() {
    let e = with_env(&[("PAYRUN_DATABASE_MAX_CONNECTIONS", "0")]).unwrap_err();
    assert!(
        e.to_string().contains("PAYRUN_DATABASE_MAX_CONNECTIONS"),
        "{e}"
    );
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

/// config/default.toml names each key's variable in the comment above it (a comment may
/// serve several keys in a row), so the file stays the reference for the environment.
#[test]
fn default_toml_names_every_keys_variable() {
    let mut section = String::new();
    let mut comment = String::new();
    let mut after_key = false;
    for line in BUILTIN.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_string();
            comment.clear();
        } else if let Some(c) = line.strip_prefix('#') {
            if std::mem::take(&mut after_key) {
                comment.clear();
            }
            comment.push_str(c);
            comment.push('\n');
        } else if let Some((key, _)) = line.split_once('=') {
            let var = format!("PAYRUN_{section}_{}", key.trim()).to_ascii_uppercase();
            assert!(
                comment.contains(&var),
                "config/default.toml: say {var} in the comment above {section}.{}",
                key.trim()
            );
            after_key = true;
        }
    }
}
