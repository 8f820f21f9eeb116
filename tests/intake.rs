//! Submitting files: a rejected file stores and enqueues nothing, a resubmitted file returns
//! its batch, a dry run stores nothing.

mod common;

use common::app::*;
use payrun::app::{SubmitError, SubmitOptions, Submitted};
use payrun::item::ItemState;
use payrun::store::CreateBatchError;

on_both_backends!(
    a_rejected_csv_stores_and_enqueues_nothing,
    a_row_naming_an_unknown_payee_without_contact_rejects_the_whole_file,
    resubmitting_the_same_file_returns_the_existing_batch,
    allow_duplicate_stores_a_second_batch,
    a_dry_run_validates_and_stores_nothing,
    an_accepted_file_enqueues_one_job_per_item,
    a_bad_row_late_in_a_large_file_leaves_nothing_stored,
    a_payee_repeated_far_apart_is_refused_naming_both_lines,
);

/// A file of `n` rows paying payees that already have Dots users (ids given in the file).
fn big_file(n: usize) -> String {
    let mut csv = String::from("payee_id,amount,dots_user_id\n");
    for i in 0..n {
        csv.push_str(&format!(
            "p-{i:06},{}.{:02},{}\n",
            1 + i % 50,
            i % 100,
            uuid::Uuid::from_u128(0x5e11_0000_0000_4000_8000_0000_0000_0000 | i as u128)
        ));
    }
    csv
}

async fn a_rejected_csv_stores_and_enqueues_nothing(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "{HEADER}{}{}{}",
        new_payee_row("a", "1.00", "5550001"),
        new_payee_row("b", "1.001", "5550002"),
        new_payee_row("a", "2.00", "5550003"),
    );
    let err = app.submit(&csv).await.unwrap_err();
    assert!(err.is_bad_input());
    let msg = err.to_string();
    assert!(msg.contains("line 3, column amount"), "{msg}");
    assert!(msg.contains("line 4, column payee_id"), "{msg}");
    assert!(app.store.list_batches(10).await.unwrap().is_empty());
    assert_eq!(app.store.queued_jobs().await.unwrap(), 0);
}

async fn a_row_naming_an_unknown_payee_without_contact_rejects_the_whole_file(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("known", "5550010").await;
    let csv = format!(
        "{HEADER}{}{}{}",
        known_payee_row("known", "1.00"),
        new_payee_row("new", "2.00", "5550011"),
        known_payee_row("ghost", "3.00"),
    );
    let err = app.submit(&csv).await.unwrap_err();
    let SubmitError::Rejected {
        source: CreateBatchError::UnknownPayees(rows),
        ..
    } = &err
    else {
        panic!("expected unknown payees, got {err}")
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].line, 4);
    assert!(rows[0].reason.contains("ghost"));
    assert!(
        app.store.list_batches(10).await.unwrap().is_empty(),
        "rolled back"
    );
    assert_eq!(app.store.queued_jobs().await.unwrap(), 0);
}

async fn resubmitting_the_same_file_returns_the_existing_batch(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!("{HEADER}{}", new_payee_row("a", "1.00", "5550001"));
    let first = app.batch(&csv).await;
    match app.submit(&csv).await.unwrap() {
        Submitted::Existing { batch, .. } => assert_eq!(batch, first),
        other => panic!("expected the existing batch, got {other:?}"),
    }
    assert_eq!(app.store.list_batches(10).await.unwrap().len(), 1);
    assert_eq!(app.store.queued_jobs().await.unwrap(), 1);
}

async fn allow_duplicate_stores_a_second_batch(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!("{HEADER}{}", new_payee_row("a", "1.00", "5550001"));
    let first = app.batch(&csv).await;
    let opts = SubmitOptions {
        allow_duplicate: true,
        ..Default::default()
    };
    let Submitted::New { batch, .. } = app.submit_with(&csv, &opts).await.unwrap() else {
        panic!("expected a new batch")
    };
    assert_ne!(batch, first);
    assert_eq!(app.store.list_batches(10).await.unwrap().len(), 2);
}

async fn a_dry_run_validates_and_stores_nothing(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "{HEADER}{}{}",
        new_payee_row("a", "1.50", "5550001"),
        new_payee_row("b", "2.25", "5550002")
    );
    let opts = SubmitOptions {
        dry_run: true,
        ..Default::default()
    };
    let Submitted::DryRun {
        summary,
        new_payees,
    } = app.submit_with(&csv, &opts).await.unwrap()
    else {
        panic!("expected a dry run")
    };
    assert_eq!((summary.rows, summary.total_cents), (2, 375));
    assert_eq!(new_payees, 2, "both payees would be onboarded");
    assert!(app.store.list_batches(10).await.unwrap().is_empty());
    assert_eq!(app.store.queued_jobs().await.unwrap(), 0);
}

async fn an_accepted_file_enqueues_one_job_per_item(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "{HEADER}{}{}",
        new_payee_row("a", "1.50", "5550001"),
        new_payee_row("b", "2.25", "5550002")
    );
    let batch = app.batch(&csv).await;
    assert_eq!(app.store.queued_jobs().await.unwrap(), 2);
    let items = app.items(batch).await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i.state == ItemState::Pending));
    assert_eq!(items.iter().map(|i| i.amount.get()).sum::<i64>(), 375);
}

async fn a_bad_row_late_in_a_large_file_leaves_nothing_stored(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    // Rows stream into the store as they are read: the bad row comes after the first
    // thousands have been written, and the rollback must take them all back.
    let mut csv = big_file(5000);
    csv.push_str("late,12.345,6f1c1f0e-8b1e-4a4c-9a51-2b0d2f7d9a10\n");
    let tail = big_file(10).replace("p-", "q-");
    csv.push_str(tail.split_once('\n').unwrap().1);
    let err = app.submit(&csv).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("line 5002, column amount"), "{msg}");
    assert!(app.store.list_batches(10).await.unwrap().is_empty());
    assert_eq!(raw_count(&app, "SELECT COUNT(*) FROM items").await, 0);
    assert_eq!(app.store.queued_jobs().await.unwrap(), 0);
    // The same file, fixed, is accepted whole.
    let fixed = csv.replace("late,12.345", "late,12.34");
    let Submitted::New { summary, .. } = app
        .submit_with(&fixed, &SubmitOptions::default())
        .await
        .unwrap()
    else {
        panic!("expected a new batch")
    };
    assert_eq!(summary.rows, 5011);
}

async fn a_payee_repeated_far_apart_is_refused_naming_both_lines(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let mut csv = big_file(3000);
    csv.push_str("p-000007,1.00,6f1c1f0e-8b1e-4a4c-9a51-2b0d2f7d9a10\n");
    let err = app.submit(&csv).await.unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("line 3002, column payee_id: payee \"p-000007\" already appears on line 9"),
        "{msg}"
    );
    assert!(app.store.list_batches(10).await.unwrap().is_empty());
    assert_eq!(raw_count(&app, "SELECT COUNT(*) FROM items").await, 0);
}
