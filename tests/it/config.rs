//! Configuration through the real binary: a config file with a key payrun does not know
//! (`config/default.toml` in the working directory, or `--config FILE`) stops it with exit 2
//! and a message naming the key and the file, without showing the value; a bad value in the
//! environment names the variable; `PAYRUN_<SECTION>_<KEY>` reaches the running command, and
//! wins over the old name of the same key; a `PAYRUN_*` variable that is no setting is not an
//! error.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::app::*;

on_both_backends!(the_canonical_environment_name_reaches_the_command_and_wins_over_its_alias,);

/// `payrun ARGS` in `dir` with none of the test's own `PAYRUN_*`/`DOTS_*` variables, and `env`.
fn payrun(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_payrun"));
    c.args(args).current_dir(dir).env("RUST_LOG", "payrun=warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYRUN_") || k.starts_with("DOTS_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("payrun runs")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("payrun.db").display())
}

#[test]
fn a_config_file_with_an_unknown_key_exits_2_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    std::fs::write(
        dir.path().join("extra.toml"),
        "[dots]\napi_key = \"sk-s3cret-in-a-file\"\n",
    )
    .unwrap();
    let out = payrun(
        dir.path(),
        &["--config", "extra.toml", "status"],
        &[("PAYRUN_DATABASE_URL", &db)],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("error: invalid config in extra.toml: unknown key `dots.api_key`"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");

    // config/default.toml in the working directory is checked the same way.
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/default.toml"),
        "[worker]\nbackof_max_secs = 30\n",
    )
    .unwrap();
    let out = payrun(dir.path(), &["status"], &[("PAYRUN_DATABASE_URL", &db)]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("config/default.toml: unknown key `worker.backof_max_secs`"),
        "{shown}"
    );
    assert!(!dir.path().join("payrun.db").exists(), "nothing opened");
}

#[test]
fn a_bad_value_in_the_environment_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    for (var, value, says) in [
        (
            "PAYRUN_WORKER_CONCURRENCY",
            "x",
            "error: invalid value for PAYRUN_WORKER_CONCURRENCY: `worker.concurrency` must be usize, not string \"x\"",
        ),
        (
            "PAYRUN_CONCURRENCY",
            "-3",
            "error: invalid value for PAYRUN_CONCURRENCY: `worker.concurrency`",
        ),
        (
            "PAYRUN_WORKER_POLL_SCHEDULE_SECS",
            "60,300",
            "(write a list as [a,b])",
        ),
    ] {
        let out = payrun(
            dir.path(),
            &["status"],
            &[("PAYRUN_DATABASE_URL", &db), (var, value)],
        );
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{var}: {shown}");
        assert!(shown.contains(says), "{var}: {shown}");
    }
}

async fn the_canonical_environment_name_reaches_the_command_and_wins_over_its_alias(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(b, dir.path()).await;
    let csv = format!("{HEADER}{}", new_payee_row("p1", "5.00", "5555550100"));
    std::fs::write(dir.path().join("batch.csv"), csv).unwrap();
    let submit = |env: &[(&str, &str)]| {
        let mut all = vec![("PAYRUN_DATABASE_URL", db.as_str())];
        all.extend_from_slice(env);
        payrun(dir.path(), &["submit", "--dry-run", "batch.csv"], &all)
    };

    // $5.00 is above a $1.00 limit set by the canonical name: the file is refused.
    let out = submit(&[("PAYRUN_LIMITS_MAX_ITEM_CENTS", "100")]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("above the maximum of 1.00 per item"),
        "{shown}"
    );
    // The old name still means the same.
    let out = submit(&[("PAYRUN_MAX_ITEM_CENTS", "100")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Both set: the canonical name wins, and a warning says so.
    let out = submit(&[
        ("PAYRUN_MAX_ITEM_CENTS", "100"),
        ("PAYRUN_LIMITS_MAX_ITEM_CENTS", "1000"),
    ]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("PAYRUN_LIMITS_MAX_ITEM_CENTS wins"),
        "{shown}"
    );
    // Variables that are no settings: other programs' are ignored, and one that looks like a
    // key of a known section is warned about by name, neither stops the command.
    let out = submit(&[
        ("PAYRUN_CHAOS_ITEMS", "7"),
        (
            "PAYRUN_DASHBOARD_TOKEN",
            "t0ken-s3cret-0123456789abcdef0123",
        ),
        ("PAYRUN_WORKER_NO_SUCH_KEY", "v4lue"),
    ]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("PAYRUN_WORKER_NO_SUCH_KEY is not a payrun setting"),
        "{shown}"
    );
    assert!(!shown.contains("PAYRUN_DASHBOARD_TOKEN"), "{shown}");
    assert!(
        !shown.contains("t0ken") && !shown.contains("v4lue"),
        "{shown}"
    );
}
