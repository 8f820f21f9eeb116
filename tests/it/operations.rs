//! Operations: scheduled batches (one batch per tick across workers, missed ticks, inbox
//! files), approval gating, reruns that never pay twice, and cancel before and after transfer.

use std::time::Duration;

use crate::common::app::*;
use payrun::app::ops;
use payrun::app::schedule::{self, Schedule, TickOutcome};
use payrun::app::{SubmitOptions, Submitted};
use payrun::config::Limits;
use payrun::item::ItemState;
use payrun::jobs::Queue;
use payrun::store::Store;

on_both_backends!(
    a_schedule_tick_seen_by_two_workers_creates_one_batch,
    a_missed_tick_runs_once_after_restart,
    an_inbox_file_becomes_exactly_one_batch,
    a_batch_over_the_approval_threshold_waits_until_approved,
    rerunning_a_failed_item_whose_transfer_happened_does_not_pay_again,
    rerunning_an_item_that_failed_after_its_transfer_only_redoes_the_payout_flow,
    cancel_stops_items_before_transfer_and_refuses_after,
    a_worker_that_saw_a_batch_approved_does_not_pay_it_after_cancel,
    a_new_flow_link_replaces_a_stale_one_without_paying_again,
);

/// A SQLite "marketplace" database with a payouts table, and a schedule reading it.
fn sql_schedule(app: &TestApp, cron: &str) -> Schedule {
    let market = app.dir.path().join("market.db");
    let url = format!("sqlite://{}?mode=rwc", market.display());
    let jobs = app.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("weekly.toml"),
        format!(
            "name = \"weekly\"\ncron = \"{cron}\"\n[source]\nkind = \"sql\"\ndatabase_url = \"{url}\"\nquery = \"SELECT payee_id, amount FROM payouts_due ORDER BY payee_id\"\n"
        ),
    )
    .unwrap();
    schedule::load_dir(&jobs).unwrap().remove(0)
}

async fn seed_market(app: &TestApp) {
    let url = format!(
        "sqlite://{}?mode=rwc",
        app.dir.path().join("market.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE payouts_due (payee_id TEXT PRIMARY KEY, amount TEXT NOT NULL);
         INSERT INTO payouts_due VALUES ('m1', '10.00'), ('m2', '20.50');",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    app.known_payee("m1", "5550401").await;
    app.known_payee("m2", "5550402").await;
}

async fn a_schedule_tick_seen_by_two_workers_creates_one_batch(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    seed_market(&app).await;
    let s = sql_schedule(&app, "0 0 9 * * Mon");
    // Two workers: separate connections, separate queues, the same tick.
    let other = Store::connect(&app.db_url).await.unwrap();
    let tick = 1_700_000_000_000;
    let (a, c) = tokio::join!(
        async {
            let mut q = app.queue.clone();
            schedule::tick(&app.store, &mut q, &s, tick, &Limits::default())
                .await
                .unwrap()
        },
        async {
            let mut q = Queue::new(&other, Duration::from_secs(10));
            schedule::tick(&other, &mut q, &s, tick, &Limits::default())
                .await
                .unwrap()
        },
    );
    let made: Vec<_> = [&a, &c]
        .into_iter()
        .filter(|o| matches!(o, TickOutcome::Batches(_)))
        .collect();
    assert_eq!(made.len(), 1, "one worker makes the batch: {a:?} / {c:?}");
    let batches = app.store.list_batches(10).await.unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].schedule.as_deref(), Some("weekly"));
    assert_eq!(batches[0].item_count, 2);
    // The same tick again (a restarted worker) makes nothing.
    let mut q = app.queue.clone();
    let again = schedule::tick(&app.store, &mut q, &s, tick, &Limits::default())
        .await
        .unwrap();
    assert_eq!(again, TickOutcome::AlreadyDone);
    assert_eq!(app.store.list_batches(10).await.unwrap().len(), 1);
}

async fn a_missed_tick_runs_once_after_restart(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    seed_market(&app).await;
    let s = sql_schedule(&app, "0 * * * * *"); // every minute
    let now = payrun::store::now_ms();
    assert_eq!(
        schedule::missed_tick(&app.store, &s, now).await.unwrap(),
        None,
        "never ran: nothing missed"
    );
    // It last ran an hour ago; every worker was down since.
    let mut q = app.queue.clone();
    let an_hour_ago = (now - 3_600_000) / 60_000 * 60_000;
    schedule::tick(&app.store, &mut q, &s, an_hour_ago, &Limits::default())
        .await
        .unwrap();
    let missed = schedule::missed_tick(&app.store, &s, now)
        .await
        .unwrap()
        .expect("a tick was missed");
    assert!(
        missed > now - 60_000 && missed <= now,
        "the latest missed tick runs, once"
    );
    let out = schedule::tick(&app.store, &mut q, &s, missed, &Limits::default())
        .await
        .unwrap();
    assert!(matches!(out, TickOutcome::Batches(_)), "{out:?}");
    assert_eq!(
        schedule::missed_tick(&app.store, &s, now).await.unwrap(),
        None,
        "caught up"
    );
    assert_eq!(
        app.store.list_batches(10).await.unwrap().len(),
        2,
        "the old tick and the one catch-up"
    );
}

async fn an_inbox_file_becomes_exactly_one_batch(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let inbox = app.dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let jobs = app.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("inbox.toml"),
        format!("name = \"inbox\"\ncron = \"0 */5 * * * *\"\n[source]\nkind = \"csv\"\npath = \"{}/*.csv\"\n", inbox.display()),
    )
    .unwrap();
    let s = schedule::load_dir(&jobs).unwrap().remove(0);
    std::fs::write(
        inbox.join("a.csv"),
        format!("{HEADER}{}", new_payee_row("i1", "3.00", "5550501")),
    )
    .unwrap();
    let mut q = app.queue.clone();
    let first = schedule::tick(&app.store, &mut q, &s, 1_000, &Limits::default())
        .await
        .unwrap();
    assert!(
        matches!(first, TickOutcome::Batches(ref b) if b.len() == 1),
        "{first:?}"
    );
    let second = schedule::tick(&app.store, &mut q, &s, 2_000, &Limits::default())
        .await
        .unwrap();
    assert!(matches!(second, TickOutcome::Nothing(_)), "{second:?}");
    std::fs::write(
        inbox.join("b.csv"),
        format!("{HEADER}{}", new_payee_row("i2", "4.00", "5550502")),
    )
    .unwrap();
    let third = schedule::tick(&app.store, &mut q, &s, 3_000, &Limits::default())
        .await
        .unwrap();
    assert!(
        matches!(third, TickOutcome::Batches(ref b) if b.len() == 1),
        "only the new file: {third:?}"
    );
    assert_eq!(app.store.list_batches(10).await.unwrap().len(), 2);
}

async fn a_batch_over_the_approval_threshold_waits_until_approved(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("big", "5550601").await;
    let opts = SubmitOptions {
        limits: Limits {
            approval_threshold_cents: 10_000,
            ..Limits::default()
        },
        ..Default::default()
    };
    let Submitted::New {
        batch,
        awaiting_approval,
        ..
    } = app
        .submit_with(
            &format!("{HEADER}{}", known_payee_row("big", "150.00")),
            &opts,
        )
        .await
        .unwrap()
    else {
        panic!("expected a new batch")
    };
    assert!(awaiting_approval);
    assert_eq!(
        app.store.queued_jobs().await.unwrap(),
        0,
        "nothing enqueued"
    );
    let id = app.item(batch, "big").await.id;
    app.engine.process_item(id).await.unwrap();
    assert_eq!(
        app.item(batch, "big").await.state,
        ItemState::Pending,
        "a stray job does nothing"
    );
    assert!(app.ledger().transfers.is_empty());

    let mut q = app.queue.clone();
    assert!(ops::approve(&app.store, &mut q, batch).await.unwrap());
    assert!(
        !ops::approve(&app.store, &mut q, batch).await.unwrap(),
        "approving twice is a no-op"
    );
    assert_eq!(app.store.queued_jobs().await.unwrap(), 1);
    app.step_until_idle(batch).await;
    assert_eq!(
        app.item(batch, "big").await.state,
        ItemState::AwaitingPayout
    );
    app.assert_paid_exactly_once(batch).await;
}

async fn rerunning_a_failed_item_whose_transfer_happened_does_not_pay_again(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("p", "5550701").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "8.00")))
        .await;
    let id = app.item(batch, "p").await.id;
    // The transfer went through but its response was lost; then every retry was refused and
    // the item failed without learning that the money moved.
    app.sim()
        .inject("POST /v2/transfers", payrun::dots::sim::Fault::Drop, 1);
    app.engine.process_item(id).await.unwrap();
    assert_eq!(app.ledger().transfers.len(), 1);
    app.store
        .fail_item(id, ItemState::Transferring, "gave up (test)")
        .await
        .unwrap();
    // A day later, the key has aged out of Dots' window.
    app.engine.advance_clock(Duration::from_secs(25 * 3600));
    app.sim().clock().advance(Duration::from_secs(25 * 3600));

    let mut q = app.queue.clone();
    let r = ops::rerun(&app.store, &mut q, batch, None).await.unwrap();
    assert_eq!(r.done.len(), 1);
    let again = ops::rerun(&app.store, &mut q, batch, None).await.unwrap();
    assert!(
        again.done.is_empty() && again.skipped.len() == 1,
        "running rerun twice is safe"
    );
    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    assert_eq!(app.ledger().transfers.len(), 1, "reconciled, not re-sent");
    app.assert_paid_exactly_once(batch).await;
}

async fn rerunning_an_item_that_failed_after_its_transfer_only_redoes_the_payout_flow(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("p", "5550702").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "8.00")))
        .await;
    let id = app.item(batch, "p").await.id;
    // Fails, then fails again once the step's time budget is spent: the item gives up.
    let attempts = 2;
    app.sim().inject(
        "POST /v2/flows",
        payrun::dots::sim::Fault::Status(500),
        attempts,
    );
    app.engine.process_item(id).await.expect("process item");
    app.spend_time_budget();
    app.step_until_idle(batch).await;
    let failed = app.item(batch, "p").await;
    assert_eq!(failed.state, ItemState::Failed, "payout flow kept failing");
    assert!(failed.transfer_id.is_some());
    assert_eq!(
        app.sim().request_count("POST /v2/flows") as usize,
        attempts,
        "every fault used up"
    );
    assert_eq!(
        app.sim().request_count("GET /v2/flows"),
        0,
        "a refused flow call needs no search for a flow it might have made"
    );

    let mut q = app.queue.clone();
    ops::rerun(&app.store, &mut q, batch, Some(id))
        .await
        .unwrap();
    assert_eq!(app.item(batch, "p").await.state, ItemState::Transferred);
    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "p").await.state, ItemState::AwaitingPayout);
    app.assert_paid_exactly_once(batch).await;
}

async fn cancel_stops_items_before_transfer_and_refuses_after(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("paid", "5550801").await;
    let csv = format!(
        "{HEADER}{}{}",
        known_payee_row("paid", "1.00"),
        new_payee_row("new", "2.00", "5550802")
    );
    let batch = app.batch(&csv).await;
    let paid = app.item(batch, "paid").await.id;
    app.engine.process_item(paid).await.unwrap();
    assert_eq!(
        app.item(batch, "paid").await.state,
        ItemState::AwaitingPayout
    );

    let r = ops::cancel(&app.store, batch, None).await.unwrap();
    assert_eq!(
        r.done.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    assert_eq!(r.skipped.len(), 1);
    assert!(r.skipped[0].2.contains("already paid"), "{:?}", r.skipped);
    assert_eq!(app.item(batch, "new").await.state, ItemState::Canceled);
    // Twice is safe; a canceled item is never paid.
    let again = ops::cancel(&app.store, batch, None).await.unwrap();
    assert!(again.done.is_empty());
    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "new").await.state, ItemState::Canceled);
    app.assert_paid_exactly_once(batch).await;
}

/// The worker remembers that a batch is approved; a cancel after that still stops its items.
async fn a_worker_that_saw_a_batch_approved_does_not_pay_it_after_cancel(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("k", "5550811").await;
    let csv = format!(
        "{HEADER}{}{}",
        new_payee_row("n", "2.00", "5550812"),
        known_payee_row("k", "1.00")
    );
    let batch = app.batch(&csv).await;
    // The worker sees the batch approved while onboarding one payee.
    let n = app.item(batch, "n").await.id;
    app.engine.process_item(n).await.unwrap();
    assert_eq!(app.item(batch, "n").await.state, ItemState::Onboarding);

    let r = ops::cancel(&app.store, batch, None).await.unwrap();
    assert_eq!(r.done.len(), 2, "{r:?}");
    let record = app.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(record.status, "canceled");
    // Its memory of "approved" is stale now; the item's own state stops it.
    let k = app.item(batch, "k").await.id;
    let next = app.engine.process_item(k).await.unwrap();
    assert_eq!(next, payrun::jobs::Next::Idle);
    assert_eq!(app.item(batch, "k").await.state, ItemState::Canceled);
    assert!(app.ledger().transfers.is_empty());
    assert_eq!(
        app.state_history(k).await,
        [ItemState::Pending, ItemState::Canceled]
    );
}

async fn a_new_flow_link_replaces_a_stale_one_without_paying_again(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("p", "5550901").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("p", "4.00")))
        .await;
    app.step_until_idle(batch).await;
    let before = app.item(batch, "p").await;
    let mut q = app.queue.clone();
    let id = before.id;
    assert_eq!(
        ops::retry_flow(&app.store, &mut q, id).await.unwrap(),
        Ok(ItemState::AwaitingPayout)
    );
    app.step_until_idle(batch).await;
    let after = app.item(batch, "p").await;
    assert_eq!(after.state, ItemState::AwaitingPayout);
    assert_ne!(after.payout_link, before.payout_link);
    app.assert_paid_exactly_once(batch).await;
}
