//! Secrets stay secret, checked on the real binary: a database password never appears in
//! anything payrun prints, whatever shape the URL has (a bad port, an IPv6 host, an unencoded
//! `@` or `#`, `?password=`), from the environment or `--database-url`, in errors, logs or a
//! schedule's description; `payrun serve` refuses a dashboard token under 32 characters and a
//! webhook key under 16 bytes without showing them; and the session cookie is `Secure` unless
//! the dashboard listens on loopback (`[dashboard] secure_cookie = "auto"`).

use std::time::Duration;

use crate::common::app::*;
use base64::Engine as _;

on_both_backends!(
    serve_refuses_a_dashboard_token_under_32_characters_without_showing_it,
    serve_refuses_a_webhook_secret_under_16_bytes_without_showing_it,
    the_session_cookie_is_secure_unless_serve_listens_on_loopback,
);

const PASSWORD: &str = "s3cretpw";

/// Every secret payrun holds in settings (the Dots API key and webhook secret, the dashboard
/// token, the simulator's keys) is a `secret::Secret`: `Debug` of whatever holds it shows `***`.
#[test]
fn no_settings_show_a_secret_they_hold_in_debug() {
    let sim = payrun::dots::sim::SimConfig {
        api_key: "sim-k3y-s3cret".into(),
        webhook_secret: Some("whsec_s3cret-sim".into()),
        ..Default::default()
    };
    let mut settings = payrun::config::Settings::builtin();
    settings.dots.api_key = "api-k3y-s3cret".into();
    settings.dots.webhook_secret = Some("whsec_s3cret-hook".into());
    let token = payrun::app::dashboard::DashboardToken::new("t0ken-s3cret-0123456789abcdef0123")
        .expect("a long enough token");
    let shown = format!("{sim:?}\n{settings:?}\n{token:?}");
    for secret in [
        "sim-k3y-s3cret",
        "whsec_s3cret-sim",
        "api-k3y-s3cret",
        "whsec_s3cret-hook",
        "t0ken-s3cret",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
    }
    assert!(shown.contains("***"), "{shown}");
}

/// The real binary, in `dir`, with `env`; killed if it runs longer than `limit`.
async fn payrun(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("PAYRUN_DATABASE_URL")
        .env_remove("PAYRUN_DASHBOARD_TOKEN")
        .env_remove("DOTS_WEBHOOK_SECRET")
        .env("RUST_LOG", "debug")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("run payrun");
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("payrun output");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), text)
        }
        Err(_) => (None, "(still running: killed)".into()),
    }
}

#[tokio::test]
async fn no_error_path_prints_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        format!("postgres://u:{PASSWORD}@127.0.0.1:notaport/db"),
        format!("postgres://u:{PASSWORD}@[::1]:5432/db"),
        format!("postgres://u:{PASSWORD}@[::1]:notaport/db"),
        format!("postgres://u:{PASSWORD}@127.0.0.1:5432/no_such_database_here"),
        "postgres://u:pa@ss#word@127.0.0.1:notaport/db".to_string(),
        "postgres://u:pa@ss#word@127.0.0.1/db".to_string(),
        format!("postgresql://u:p/a?{PASSWORD}@127.0.0.1:notaport/db"),
        format!("postgres://u@127.0.0.1:notaport/db?password={PASSWORD}"),
        format!("mysql://u:{PASSWORD}@127.0.0.1/db"),
    ];
    for url in &urls {
        let by_env = [("PAYRUN_DATABASE_URL", url.as_str())];
        for (how, args, env) in [
            ("env", vec!["status"], &by_env[..]),
            ("flag", vec!["--database-url", url, "status"], &[][..]),
            (
                "flag, json logs",
                vec!["--log-format", "json", "--database-url", url, "show", "x"],
                &[][..],
            ),
        ] {
            let (code, out) = payrun(dir.path(), &args, env, Duration::from_secs(60)).await;
            assert!(
                code.is_some_and(|c| c != 0),
                "{url} ({how}) exits non-zero: {out}"
            );
            for secret in [PASSWORD, "ss#word", "pa@ss"] {
                assert!(
                    !out.contains(secret),
                    "{url} ({how}) shows {secret:?}:\n{out}"
                );
            }
            assert!(
                out.contains("***"),
                "{url} ({how}) says which URL failed: {out}"
            );
        }
    }
}

#[tokio::test]
async fn a_schedule_source_url_never_shows_its_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    for (n, url) in [
        format!("postgres://reader:{PASSWORD}@127.0.0.1:notaport/shop"),
        "postgres://reader:pa@ss#word@127.0.0.1:notaport/shop".to_string(),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(
            dir.path().join(format!("jobs/s{n}.toml")),
            format!(
                "name = \"s{n}\"\ncron = \"0 0 9 * * Mon\"\n[source]\nkind = \"sql\"\n\
                 database_url = \"{url}\"\nquery = \"SELECT 1\"\n"
            ),
        )
        .unwrap();
    }
    let db = format!("sqlite://{}", dir.path().join("payrun.db").display());
    let env = [("PAYRUN_DATABASE_URL", db.as_str())];
    for args in [
        &["jobs", "list"][..],
        &["jobs", "run", "s0"],
        &["jobs", "run", "s1"],
    ] {
        let (code, out) = payrun(dir.path(), args, &env, Duration::from_secs(60)).await;
        assert!(code.is_some(), "{args:?}: {out}");
        for secret in [PASSWORD, "ss#word", "pa@ss"] {
            assert!(!out.contains(secret), "{args:?} shows {secret:?}:\n{out}");
        }
    }
}

/// Runs `payrun serve` on a fresh database with `env`; returns its exit code and output, or
/// `None` if it was still serving after 20 s.
async fn serve_with(b: Backend, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(b, dir.path()).await;
    let mut all = vec![("PAYRUN_DATABASE_URL", db.as_str())];
    all.extend_from_slice(env);
    let args = ["serve", "--listen", "127.0.0.1:0"];
    payrun(dir.path(), &args, &all, Duration::from_secs(20)).await
}

async fn serve_refuses_a_dashboard_token_under_32_characters_without_showing_it(b: Backend) {
    let short = "short-dash-token-1234567";
    let (code, out) = serve_with(b, &[("PAYRUN_DASHBOARD_TOKEN", short)]).await;
    assert_eq!(code, Some(1), "refused at start-up: {out}");
    assert!(
        out.contains("PAYRUN_DASHBOARD_TOKEN") && out.contains("32"),
        "{out}"
    );
    assert!(!out.contains(short), "the token is shown: {out}");
}

async fn serve_refuses_a_webhook_secret_under_16_bytes_without_showing_it(b: Backend) {
    let key = base64::engine::general_purpose::STANDARD.encode("fifteen-bytes!!");
    let secret = format!("whsec_{key}");
    let (code, out) = serve_with(b, &[("DOTS_WEBHOOK_SECRET", &secret)]).await;
    assert_eq!(code, Some(1), "refused at start-up: {out}");
    assert!(
        out.contains("DOTS_WEBHOOK_SECRET") && out.contains("16"),
        "{out}"
    );
    assert!(!out.contains(&key), "the secret is shown: {out}");
}

/// A port free right now on all interfaces.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `Set-Cookie` of `/login` from `payrun serve --listen {host}:PORT` (reached on
/// 127.0.0.1), with `env` added.
async fn login_cookie(b: Backend, host: &str, env: &[(&str, &str)]) -> String {
    const TOKEN: &str = "serve-test-token-0123456789abcdefghij";
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(b, dir.path()).await;
    let port = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrun"));
    cmd.args(["serve", "--listen", &format!("{host}:{port}")])
        .current_dir(dir.path())
        .env("PAYRUN_DATABASE_URL", &db)
        .env("PAYRUN_DASHBOARD_TOKEN", TOKEN)
        .env_remove("DOTS_WEBHOOK_SECRET")
        .env_remove("PAYRUN_DASHBOARD_SECURE_COOKIE")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("payrun serve");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/login?token={TOKEN}");
    // A process starting up cannot be stepped: ask until it answers (at most ~30 s).
    for _ in 0..300 {
        if let Ok(r) = http.get(&url).send().await {
            let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
            let _ = child.kill().await;
            assert!(
                !cookie.contains(TOKEN),
                "the cookie holds the token: {cookie}"
            );
            return cookie;
        }
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("payrun serve did not answer");
}

fn is_secure(cookie: &str) -> bool {
    cookie.split(';').any(|f| f.trim() == "Secure")
}

async fn the_session_cookie_is_secure_unless_serve_listens_on_loopback(b: Backend) {
    let c = login_cookie(b, "0.0.0.0", &[]).await;
    assert!(is_secure(&c), "auto, all interfaces: Secure: {c}");
    let c = login_cookie(b, "127.0.0.1", &[]).await;
    assert!(!is_secure(&c), "auto, loopback over HTTP: not Secure: {c}");
    let c = login_cookie(
        b,
        "127.0.0.1",
        &[("PAYRUN_DASHBOARD_SECURE_COOKIE", "true")],
    )
    .await;
    assert!(is_secure(&c), "forced on: Secure: {c}");
    let c = login_cookie(b, "0.0.0.0", &[("PAYRUN_DASHBOARD_SECURE_COOKIE", "false")]).await;
    assert!(!is_secure(&c), "forced off: not Secure: {c}");
}
