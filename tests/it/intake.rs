//! Submitting files: a rejected file stores and enqueues nothing, a resubmitted file returns
//! its batch, a dry run stores nothing.

use crate::common::app::*;
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
    a_quote_left_open_at_the_end_of_the_file_rejects_it_naming_line_and_column,
    a_memo_spanning_lines_is_accepted_when_its_quotes_close,
    lines_are_named_as_an_editor_shows_them_in_crlf_files,
    control_and_bidi_characters_are_refused_in_every_field,
    a_nul_byte_is_bad_input_with_line_and_column,
    length_limits_count_characters_not_bytes,
    a_file_of_bad_rows_keeps_the_first_thousand_errors_and_counts_all,
    a_long_value_is_cut_short_in_the_message,
    a_record_longer_than_64_kib_is_refused_at_once,
    a_file_read_ahead_is_stored_whole_in_file_order_under_its_content_hash,
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

const U1: &str = "6f1c1f0e-8b1e-4a4c-9a51-2b0d2f7d9a10";
const U2: &str = "7a2d2e1f-9c2f-4b5d-8b62-3c1e3e8e0b21";

/// Submits `csv`, expects bad input (exit 2) with nothing stored, and returns the message.
async fn refused(app: &TestApp, csv: &str) -> String {
    let err = app.submit(csv).await.unwrap_err();
    assert!(err.is_bad_input(), "expected bad input, got {err}");
    assert!(app.store.list_batches(10).await.unwrap().is_empty());
    assert_eq!(raw_count(app, "SELECT COUNT(*) FROM items").await, 0);
    assert_eq!(app.store.queued_jobs().await.unwrap(), 0);
    err.to_string()
}

async fn a_quote_left_open_at_the_end_of_the_file_rejects_it_naming_line_and_column(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "payee_id,amount,dots_user_id,memo\ns1,1.00,{U1},\"oops\ns2,200.00,{U2},fine\ns3,300.00,{U1},fine\n"
    );
    let msg = refused(&app, &csv).await;
    assert!(msg.contains("line 2, column memo"), "{msg}");
    assert!(msg.contains("never closed"), "{msg}");
    // The same with CRLF line ends.
    let msg = refused(&app, &csv.replace('\n', "\r\n")).await;
    assert!(msg.contains("line 2, column memo"), "{msg}");
}

async fn a_memo_spanning_lines_is_accepted_when_its_quotes_close(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "payee_id,amount,dots_user_id,memo\ns1,1.00,{U1},\"two\nlines, \"\"quoted\"\"\"\ns2,2.00,{U2},fine\n"
    );
    let batch = app.batch(&csv).await;
    let items = app.items(batch).await;
    let lines: Vec<(i64, &str, Option<&str>)> = items
        .iter()
        .map(|i| (i.line, i.payee_id.as_str(), i.memo.as_deref()))
        .collect();
    assert_eq!(
        lines,
        [
            (2, "s1", Some("two\nlines, \"quoted\"")),
            (4, "s2", Some("fine"))
        ]
    );
}

async fn lines_are_named_as_an_editor_shows_them_in_crlf_files(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    // Excel's default: CRLF, with a byte order mark; a quoted memo spans lines 3 and 4.
    let head = format!(
        "\u{feff}payee_id,amount,dots_user_id,memo\r\ns1,1.00,{U1},\r\ns2,2.00,{U2},\"a\r\nb\"\r\n"
    );
    let msg = refused(&app, &format!("{head}s3,1.001,{U1},\r\n")).await;
    assert!(msg.contains("line 5, column amount"), "{msg}");
    let msg = refused(&app, &format!("{head}s3,1.00,{U1},\r\ns1,1.00,{U2},\r\n")).await;
    assert!(
        msg.contains("line 6, column payee_id: payee \"s1\" already appears on line 2"),
        "{msg}"
    );
    // Stored lines are the same lines.
    let batch = app.batch(&format!("{head}s3,1.00,{U1},\r\n")).await;
    let lines: Vec<(i64, String)> = app
        .items(batch)
        .await
        .into_iter()
        .map(|i| (i.line, i.payee_id))
        .collect();
    assert_eq!(
        lines,
        [(2, "s1".into()), (3, "s2".into()), (5, "s3".into())]
    );
}

async fn control_and_bidi_characters_are_refused_in_every_field(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "{HEADER}{}{}{}{}",
        new_payee_row("ok", "1.00", "5550001"),
        new_payee_row("s\u{1b}[31mred", "1.00", "5550002"),
        "s3,1.00,,Ann\u{202e}nnA,Payee,s3@example.com,1,5550003,\n",
        "s4,1.00,,Ann,Pa\u{1b}]8;;http://x\u{7}yee,s4@example.com,1,5550004,memo\u{9b}\n",
    );
    let msg = refused(&app, &csv).await;
    assert!(
        msg.contains("line 3, column payee_id: contains a control character U+001B"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "line 4, column first_name: contains a bidirectional control character U+202E"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("line 5, column last_name: contains a control character U+001B"),
        "{msg}"
    );
    assert!(
        msg.contains("line 5, column memo: contains a control character U+009B"),
        "{msg}"
    );
    for mark in ['\u{2066}', '\u{200f}', '\u{61c}', '\u{7f}'] {
        let msg = refused(
            &app,
            &format!(
                "{HEADER}{}",
                new_payee_row(&format!("x{mark}"), "1.00", "5550001")
            ),
        )
        .await;
        assert!(msg.contains("line 2, column payee_id: contains"), "{msg}");
    }
}

async fn a_nul_byte_is_bad_input_with_line_and_column(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!("payee_id,amount,dots_user_id,memo\ns1,1.00,{U1},a\0b\n");
    let msg = refused(&app, &csv).await;
    assert!(
        msg.contains("line 2, column memo: contains a control character U+0000"),
        "{msg}"
    );
}

async fn length_limits_count_characters_not_bytes(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let euro201 = "\u{20ac}".repeat(201);
    let msg = refused(
        &app,
        &format!("payee_id,amount,dots_user_id\n{euro201},1.00,{U1}\n"),
    )
    .await;
    assert!(
        msg.contains("line 2, column payee_id: is longer than 200 characters"),
        "{msg}"
    );
    // 70 euro signs: 210 bytes, 70 characters.
    let euro70 = "\u{20ac}".repeat(70);
    let batch = app
        .batch(&format!(
            "payee_id,amount,dots_user_id\n{euro70},1.00,{U1}\n"
        ))
        .await;
    assert_eq!(app.items(batch).await[0].payee_id, euro70);
}

async fn a_file_of_bad_rows_keeps_the_first_thousand_errors_and_counts_all(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let mut csv = String::from("payee_id,amount\n");
    for i in 0..1500 {
        csv.push_str(&format!("p{i},-1\n"));
    }
    let err = app.submit(&csv).await.unwrap_err();
    let SubmitError::Invalid {
        source: payrun::intake::IntakeError::Rows { errors, .. },
        ..
    } = &err
    else {
        panic!("expected row errors, got {err}")
    };
    assert_eq!(errors.len(), 1000, "only the first thousand are kept");
    assert_eq!(errors[999].line, 1001);
    let msg = err.to_string();
    assert!(msg.contains("1500 bad row(s)"), "{msg}");
    assert!(msg.contains("... and 1450 more"), "{msg}");
    assert!(app.store.list_batches(10).await.unwrap().is_empty());
}

async fn a_long_value_is_cut_short_in_the_message(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let long = "x".repeat(10_000);
    let csv =
        format!("{HEADER}{long},1{long},,Ann,Payee,{long},1{long},5{long},\n{long},1.00,,,,,,,\n");
    let msg = refused(&app, &csv).await;
    assert!(msg.len() < 2_000, "{} bytes: {}", msg.len(), &msg[..500]);
    assert!(msg.contains("column amount: \"1xxx"), "{msg}");
    assert!(
        msg.contains("xxx\u{2026}\" is not an email address"),
        "{msg}"
    );
    assert!(msg.contains("line 3, column payee_id"), "{msg}");
}

async fn a_record_longer_than_64_kib_is_refused_at_once(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    // /dev/zero as the rest of the file: zero bytes and no line end.
    let mut zeros = format!("payee_id,amount,dots_user_id,memo\ns1,1.00,{U1},\n");
    zeros.push_str(&"\0".repeat(1 << 20));
    let msg = refused(&app, &zeros).await;
    assert!(
        msg.contains("line 3: record longer than 65536 bytes"),
        "{msg}"
    );
    // One 200 KiB quoted field.
    let field = format!(
        "payee_id,amount,dots_user_id,memo\ns1,1.00,{U1},\"{}\"\n",
        "m\n".repeat(100 << 10)
    );
    let msg = refused(&app, &field).await;
    assert!(
        msg.contains("line 2: record longer than 65536 bytes"),
        "{msg}"
    );
    // A header with no line end at all.
    let msg = refused(&app, &"payee_id".repeat(10_000)).await;
    assert!(
        msg.contains("line 1: record longer than 65536 bytes"),
        "{msg}"
    );
    // Just under the cap is read as usual (and refused for the memo's length only).
    let under = format!(
        "payee_id,amount,dots_user_id,memo\ns1,1.00,{U1},{}\n",
        "m".repeat(65_536 - 50)
    );
    let msg = refused(&app, &under).await;
    assert!(
        msg.contains("line 2, column memo: is longer than 500 characters"),
        "{msg}"
    );
}

async fn a_file_read_ahead_is_stored_whole_in_file_order_under_its_content_hash(b: Backend) {
    use sha2::Digest;
    let app = spawn_app(b, quiet_sim()).await;
    // Rows are parsed on a thread of their own, handed over in chunks of 1,024: this file
    // spans several, with a memo over two lines across the first chunk's edge.
    let mut csv = String::from("payee_id,amount,dots_user_id,memo\n");
    for i in 0..4500u128 {
        let memo = if i == 1023 { "\"two\nlines\"" } else { "m" };
        let user = uuid::Uuid::from_u128(0x5e11_0000_0000_4000_8000_0000_0000_0000 | i);
        csv.push_str(&format!("p-{:06},1.{:02},{user},{memo}\n", 4500 - i, i % 100));
    }
    let Submitted::New { batch, summary, .. } = app.submit(&csv).await.unwrap() else {
        panic!("expected a new batch")
    };
    assert_eq!(summary.rows, 4500);
    assert_eq!(
        summary.content_hash,
        hex::encode(sha2::Sha256::digest(csv.as_bytes()))
    );
    let items = app.items(batch).await;
    let lines: Vec<i64> = items.iter().map(|i| i.line).collect();
    let expected: Vec<i64> = (2..=1025).chain(1027..=4502).collect();
    assert_eq!(lines, expected, "every row once, on its own line, in file order");
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(n, i)| i.payee_id == format!("p-{:06}", 4500 - n)),
        "payees in file order"
    );
    assert_eq!(items[1023].memo.as_deref(), Some("two\nlines"));
}
