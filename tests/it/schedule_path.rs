//! The README's scheduled-batch path as a newcomer runs it: `payrun demo`, then
//! `payrun jobs run weekly-sellers` on the default (fresh) database, as real processes; a
//! source whose rows are bad is rejected with one line per reason and exit 2; the example
//! query formats money exactly.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::app::*;
use payrun::app::schedule::{self, Source, TickOutcome};
use payrun::config::Limits;
use payrun::store::Store;

on_both_backends!(
    the_readmes_scheduled_batch_sequence_works_on_a_fresh_machine,
    a_source_whose_rows_name_unknown_payees_exits_2_with_one_line_per_reason,
    the_example_querys_amounts_are_exact_at_any_size,
);

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Copies the repository's `jobs/` and `examples/` into `dir`: a fresh checkout's working
/// directory, without its `data/`.
fn fresh_checkout(dir: &Path) {
    for sub in ["jobs", "examples"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for f in std::fs::read_dir(Path::new(REPO).join(sub)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(sub).join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// `payrun ARGS` in `dir`, with no payrun or Dots settings from the test's environment except
/// `db` (None: the default database).
fn payrun(dir: &Path, db: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_payrun"));
    c.args(args).current_dir(dir).env("RUST_LOG", "payrun=warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYRUN_") || k.starts_with("DOTS_") {
            c.env_remove(k);
        }
    }
    if let Some(db) = db {
        c.env("PAYRUN_DATABASE_URL", db);
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

async fn balances(marketplace: &Path) -> Vec<(String, i64)> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", marketplace.display()))
        .await
        .unwrap();
    let rows = sqlx::query_as("SELECT seller_id, balance_cents FROM seller_balances ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

async fn the_readmes_scheduled_batch_sequence_works_on_a_fresh_machine(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    fresh_checkout(dir.path());
    let demo = payrun(dir.path(), None, &["demo"]);
    assert!(demo.status.success(), "{}", text(&demo));

    // SQLite: the default database, data/payrun.db, which the demo never touched.
    let db = match b {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh_database(b, dir.path()).await),
    };
    let run = payrun(
        dir.path(),
        db.as_deref(),
        &["jobs", "run", "weekly-sellers"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    let batch = out
        .trim()
        .strip_prefix("made batch(es): ")
        .unwrap_or_else(|| panic!("{}", text(&run)))
        .to_string();

    let url =
        db.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("data/payrun.db").display()));
    let store = Store::connect(&url).await.unwrap();
    let mut items: Vec<(String, i64)> = store
        .batch_items(batch.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.payee_id, i.amount.get()))
        .collect();
    items.sort();
    let expected = balances(&dir.path().join("data/marketplace.db")).await;
    assert_eq!(expected.len(), 50);
    assert_eq!(
        items, expected,
        "one item per seller, of exactly its balance"
    );
    store.close().await;
}

async fn a_source_whose_rows_name_unknown_payees_exits_2_with_one_line_per_reason(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let market = dir.path().join("market.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", market.display()))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE due (seller_id TEXT, cents INTEGER)")
        .execute(&pool)
        .await
        .unwrap();
    for i in 0..50 {
        sqlx::query("INSERT INTO due VALUES ($1, $2)")
            .bind(format!("seller-{i:03}"))
            .bind(1000 + i)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/ids-only.toml"),
        format!(
            "name = \"ids-only\"\ncron = \"0 0 9 * * Mon\"\n[source]\nkind = \"sql\"\n\
             database_url = \"sqlite://{}\"\n\
             query = \"SELECT seller_id AS payee_id, (cents / 100) || '.' || printf('%02d', cents % 100) AS amount FROM due ORDER BY 1\"\n",
            market.display()
        ),
    )
    .unwrap();
    let db = fresh_database(b, dir.path()).await;
    let run = payrun(dir.path(), Some(&db), &["jobs", "run", "ids-only"]);
    assert_eq!(run.status.code(), Some(2), "bad input: {}", text(&run));
    let all = text(&run);
    assert!(
        all.contains(
            "50 rows, column dots_user_id: payee has no known Dots user: give dots_user_id or first_name, last_name, email, country_code and phone_number (lines 2, 3, 4, 5, 6, …)"
        ),
        "{all}"
    );
    assert!(
        all.lines().count() < 12,
        "one line per reason, not one per row: {all}"
    );
    let store = Store::connect(&db).await.unwrap();
    assert!(
        store.list_batches(10).await.unwrap().is_empty(),
        "nothing stored"
    );
    store.close().await;
}

async fn the_example_querys_amounts_are_exact_at_any_size(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let cents: [i64; 6] = [5, 100, 12345, 1, 99, 9_007_199_254_740_993];
    let market = app.dir.path().join("marketplace.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", market.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE seller_balances (seller_id TEXT PRIMARY KEY, balance_cents INTEGER NOT NULL,
             first_name TEXT, last_name TEXT, email TEXT, country_code TEXT, phone_number TEXT,
             memo TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (i, c) in cents.iter().enumerate() {
        let seller = format!("s{i}");
        app.known_payee(&seller, &format!("555000{i:04}")).await;
        sqlx::query(
            "INSERT INTO seller_balances VALUES ($1, $2, 'A', 'B', 'a@example.com', '1', $3, 'm')",
        )
        .bind(&seller)
        .bind(c)
        .bind(format!("555000{i:04}"))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let mut s = schedule::load_dir(Path::new(REPO).join("jobs"))
        .unwrap()
        .into_iter()
        .find(|s| s.name == "weekly-sellers")
        .expect("the example schedule");
    let Source::Sql { query, .. } = s.source.clone() else {
        panic!("the example is a SQL source");
    };
    s.source = Source::Sql {
        database_url: format!("sqlite://{}", market.display()),
        query,
    };
    let out = schedule::tick(
        &app.store,
        &mut app.queue.clone(),
        &s,
        1_000,
        &Limits::default(),
    )
    .await
    .unwrap();
    let TickOutcome::Batches(made) = out else {
        panic!("expected a batch, got {out:?}");
    };
    let mut got: Vec<i64> = app
        .items(made[0].parse().unwrap())
        .await
        .into_iter()
        .map(|i| i.amount.get())
        .collect();
    got.sort();
    let mut want = cents.to_vec();
    want.sort();
    assert_eq!(got, want, "amounts are exact, to the cent");
}
