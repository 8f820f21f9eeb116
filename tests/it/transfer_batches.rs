//! Batch mode (`dots.transfer_mode = "batch"`, `jobs::chunk`): the ready items of a batch go
//! to Dots in chunks through `POST /v2/transfer-batches`, with the single transfer's per-item
//! guarantees. Every test ends with the simulator's ledger audited: each payee paid exactly
//! once (`assert_paid_exactly_once`).

use std::time::{Duration, Instant};

use crate::common::app::*;
use payrun::batch::{BatchId, ChunkState, HoldReason};
use payrun::config::{TransferBatchSize, TransferMode};
use payrun::dots::sim::{Fault, SimConfig};
use payrun::dots::types::CreateTransfer;
use payrun::item::{IdempotencyKey, ItemState, TransferOutcome};
use payrun::jobs::{item_metadata, poll};

const BATCHES: &str = "POST /v2/transfer-batches";
const SINGLES: &str = "POST /v2/transfers";

on_both_backends!(
    batch_mode_pays_a_batch_in_chunks_of_the_configured_size,
    a_chunk_whose_answer_is_lost_is_found_by_its_metadata_and_not_sent_again,
    a_chunk_refused_with_5xx_or_429_is_sent_again_with_the_same_keys,
    a_chunk_lost_and_never_found_leaves_each_item_to_reconcile_alone,
    an_item_error_fails_or_reconciles_only_that_item,
    a_short_app_wallet_inside_a_chunk_holds_the_batch_and_charges_no_item,
    every_fault_mode_on_pays_each_item_exactly_once,
    items_whose_keys_were_used_in_single_mode_are_not_paid_twice_in_batch_mode,
    a_paused_batch_sends_no_chunk_until_resumed,
    the_schema_refuses_unknown_chunk_states,
    a_chunk_left_open_by_a_dead_chunker_is_taken_over_and_finished_with_one_look,
    a_worker_killed_during_a_chunks_call_pays_each_item_once_after_restart,
);

/// `app` in batch mode, chunks of `size`.
fn batch_mode(app: &mut TestApp, size: usize) {
    app.engine = app.engine.clone().with_transfers(
        TransferMode::Batch,
        TransferBatchSize::new(size).expect("a size Dots takes"),
    );
}

/// `n` payees with Dots users: the even ones remembered from an earlier batch, the odd ones
/// named by their Dots user id in the file.
async fn known_batch(app: &TestApp, prefix: &str, n: usize) -> BatchId {
    let mut csv = HEADER.to_string();
    for i in 0..n {
        let payee = format!("{prefix}{i:03}");
        let user = app
            .known_payee(&payee, &format!("55{}{i:05}", prefix.len()))
            .await;
        if i % 2 == 0 {
            csv.push_str(&known_payee_row(&payee, &format!("{}.25", 10 + i)));
        } else {
            csv.push_str(&format!("{payee},{}.25,{user},,,,,,\n", 10 + i));
        }
    }
    app.batch(&csv).await
}

/// A worker's parts, stepped by hand until no item of the batch is left to work: the chunker
/// (turns until it finds nothing), every workable item's job (backoff skipped), the poller.
/// A round that changes nothing (an open circuit waiting for its probe) waits a little.
async fn step_batch_mode(app: &TestApp, batch: BatchId) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut moved = 0;
        loop {
            let n = app.engine.chunk_once(None).await.expect("chunker turn");
            if n == 0 {
                break;
            }
            moved += n;
        }
        let ids = app.store.batch_workable_items(batch).await.unwrap();
        if ids.is_empty() {
            return;
        }
        for id in &ids {
            app.store.retry_now(*id).await.unwrap();
            app.engine.process_item(*id).await.expect("process item");
        }
        poll::poll_due(&app.engine, i64::MAX, 100_000)
            .await
            .unwrap();
        assert!(
            Instant::now() < deadline,
            "batch {batch} still has {} items to work",
            ids.len()
        );
        if moved == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every item of the batch transferred (its payout flow made), none failed.
async fn assert_all_transferred(app: &TestApp, batch: BatchId) {
    for i in app.items(batch).await {
        assert_eq!(
            i.state,
            ItemState::AwaitingPayout,
            "{}: {:?}",
            i.payee_id,
            i.last_error
        );
        assert!(i.transfer_id.is_some());
    }
    app.assert_paid_exactly_once(batch).await;
}

async fn batch_mode_pays_a_batch_in_chunks_of_the_configured_size(b: Backend) {
    let mut app = spawn_app(b, quiet_sim()).await;
    batch_mode(&mut app, 10);
    let batch = known_batch(&app, "c", 23).await;
    step_batch_mode(&app, batch).await;
    assert_all_transferred(&app, batch).await;
    assert_eq!(app.sim().request_count(BATCHES), 3, "ceil(23 / 10) calls");
    assert_eq!(app.sim().request_count(SINGLES), 0, "no single transfer");
    let chunks = app.store.batch_chunks(batch).await.unwrap();
    assert_eq!(chunks.len(), 3);
    // The chunker made the payout flows of the items it paid: one per item, none searched for.
    assert_eq!(app.sim().request_count("POST /v2/flows"), 23);
    assert_eq!(app.sim().request_count("GET /v2/flows"), 0);
    let mut in_chunks = 0;
    for c in &chunks {
        assert_eq!(c.state, ChunkState::Done, "{:?}", c.detail);
        assert_eq!(c.sends, 1);
        assert!(c.dots_batch_id.is_some());
        in_chunks += c.items;
    }
    assert_eq!(in_chunks, 23);
    // Each item kept the key it would have had alone, and its history reads as a single
    // transfer's: pending -> transferring (intent) -> transferred -> awaiting_payout.
    let ledger = app.ledger();
    for i in app.items(batch).await {
        assert_eq!(i.transfer_key, Some(IdempotencyKey::derive(i.id, 0)));
        assert!(i.chunk_id.is_some());
        let t = ledger
            .transfers
            .iter()
            .find(|t| Some(t.id) == i.transfer_id)
            .unwrap();
        assert_eq!(
            t.idempotency_key,
            Some(IdempotencyKey::derive(i.id, 0).as_uuid())
        );
        assert_eq!(
            app.state_history(i.id).await,
            [
                ItemState::Pending,
                ItemState::Transferring,
                ItemState::Transferred,
                ItemState::AwaitingPayout
            ]
        );
        let kinds = app.event_kinds(i.id).await;
        assert!(kinds.contains(&"transfer_intent".to_string()), "{kinds:?}");
    }
    // Payees known from the file are remembered for later batches, as a single transfer does.
    let odd = app.item(batch, "c001").await;
    assert_eq!(
        app.store.payee_user("c001").await.unwrap(),
        odd.dots_user_id
    );
}

async fn a_chunk_whose_answer_is_lost_is_found_by_its_metadata_and_not_sent_again(b: Backend) {
    for fault in [Fault::Drop, Fault::Stall(Duration::from_secs(4))] {
        let mut app = spawn_app(b, quiet_sim()).await;
        batch_mode(&mut app, 50);
        let batch = known_batch(&app, "l", 12).await;
        // Dots makes the transfers, then the answer is lost (a broken connection, or one
        // slower than our timeout).
        app.sim().inject(BATCHES, fault.clone(), 1);
        step_batch_mode(&app, batch).await;
        assert_all_transferred(&app, batch).await;
        assert_eq!(
            app.sim().request_count(BATCHES),
            1,
            "{fault:?}: found, not re-sent"
        );
        assert!(app.sim().request_count("GET /v2/transfer-batches") >= 1);
        assert_eq!(app.sim().request_count(SINGLES), 0);
        let chunk = &app.store.batch_chunks(batch).await.unwrap()[0];
        assert_eq!(chunk.state, ChunkState::Done, "{:?}", chunk.detail);
    }
}

async fn a_chunk_refused_with_5xx_or_429_is_sent_again_with_the_same_keys(b: Backend) {
    for fault in [Fault::Status(503), Fault::Throttle] {
        let mut app = spawn_app(b, quiet_sim()).await;
        batch_mode(&mut app, 50);
        let batch = known_batch(&app, "r", 6).await;
        app.sim().inject(BATCHES, fault.clone(), 1);
        step_batch_mode(&app, batch).await;
        assert_all_transferred(&app, batch).await;
        assert_eq!(app.sim().request_count(BATCHES), 2, "{fault:?}");
        let chunk = &app.store.batch_chunks(batch).await.unwrap()[0];
        assert_eq!((chunk.state, chunk.sends), (ChunkState::Done, 2));
        for i in app.items(batch).await {
            assert_eq!(i.transfer_key, Some(IdempotencyKey::derive(i.id, 0)));
            assert_eq!(
                i.transfer_attempts, 1,
                "one intent, the same key sent twice"
            );
        }
    }
}

/// Three sends lost before Dots saw them (a proxy answering 502 on a dropped body is not
/// "lost"; here: timeouts with nothing made): each item's call is left open and its own job
/// reconciles it by the user's transfers, then sends its same key alone.
async fn a_chunk_lost_and_never_found_leaves_each_item_to_reconcile_alone(b: Backend) {
    let mut app = spawn_app(b, quiet_sim()).await;
    batch_mode(&mut app, 50);
    let batch = known_batch(&app, "n", 5).await;
    // Every send answers 5xx... then the chunk is handed to its items.
    app.sim().inject(BATCHES, Fault::Status(502), 3);
    loop {
        if app.engine.chunk_once(None).await.unwrap() == 0 {
            break;
        }
    }
    let chunk = &app.store.batch_chunks(batch).await.unwrap()[0];
    assert_eq!((chunk.state, chunk.sends), (ChunkState::Released, 3));
    for i in app.items(batch).await {
        assert_eq!(i.state, ItemState::Transferring);
        assert_eq!(i.transfer_outcome, Some(TransferOutcome::Retryable));
        assert!(!i.transfer_call_open);
        assert_eq!(i.attempts, 1, "the item's attempt is counted");
    }
    step_batch_mode(&app, batch).await;
    assert_all_transferred(&app, batch).await;
    assert_eq!(app.sim().request_count(SINGLES), 5, "each alone, same key");
    for i in app.items(batch).await {
        assert_eq!(i.transfer_key, Some(IdempotencyKey::derive(i.id, 0)));
    }

    // An unclear chunk that is not found: the calls stay open, so each item reconciles first.
    let mut app = spawn_app(b, quiet_sim()).await;
    batch_mode(&mut app, 50);
    let batch = known_batch(&app, "u", 4).await;
    // A stall beyond the timeout on every send, and the list of batches unreadable: nothing
    // tells whether the transfers were made.
    app.sim()
        .inject(BATCHES, Fault::Stall(Duration::from_secs(4)), 3);
    app.sim()
        .inject("GET /v2/transfer-batches", Fault::Status(500), 20);
    loop {
        if app.engine.chunk_once(None).await.unwrap() == 0 {
            break;
        }
    }
    for i in app.items(batch).await {
        assert_eq!(i.state, ItemState::Transferring);
        assert!(
            i.transfer_call_open,
            "left open: reconciled before any send"
        );
        assert_eq!(i.transfer_outcome, Some(TransferOutcome::Ambiguous));
    }
    let singles = app.sim().request_count(SINGLES);
    step_batch_mode(&app, batch).await;
    assert_all_transferred(&app, batch).await;
    assert_eq!(
        app.sim().request_count(SINGLES),
        singles,
        "the first stalled send made them: found by reconciliation, nothing sent again"
    );
    assert!(app.sim().request_count("GET /v2/transfers") >= 4);
}

async fn an_item_error_fails_or_reconciles_only_that_item(b: Backend) {
    let mut app = spawn_app(b, quiet_sim()).await;
    batch_mode(&mut app, 50);
    for i in 0..4 {
        app.known_payee(&format!("e{i}"), &format!("556000{i}"))
            .await;
    }
    // e-ghost names a Dots user that does not exist.
    let ghost = uuid::Uuid::new_v4();
    let csv = format!(
        "{HEADER}{}{}e-ghost,9.00,{ghost},,,,,,\n{}{}",
        known_payee_row("e0", "1.00"),
        known_payee_row("e1", "2.00"),
        known_payee_row("e2", "3.00"),
        known_payee_row("e3", "4.00"),
    );
    let batch = app.batch(&csv).await;
    // e2's key was used at Dots already (as if an earlier process had sent it and lost every
    // record of it): Dots refuses it inside the chunk as a duplicate.
    let e2 = app.item(batch, "e2").await;
    let user = app.store.payee_user("e2").await.unwrap().unwrap();
    let earlier = app
        .engine
        .dots
        .create_transfer(&CreateTransfer {
            amount: e2.amount.as_credit(),
            user_id: user,
            idempotency_key: Some(IdempotencyKey::derive(e2.id, 0).as_uuid()),
            metadata: Some(item_metadata(&e2, "payout")),
        })
        .await
        .unwrap();
    step_batch_mode(&app, batch).await;
    assert_eq!(app.sim().request_count(BATCHES), 1);
    let ghost_item = app.item(batch, "e-ghost").await;
    assert_eq!(ghost_item.state, ItemState::Failed);
    let reason = ghost_item.last_error.unwrap_or_default();
    assert!(reason.starts_with("transfer refused:"), "{reason}");
    assert_eq!(
        ghost_item.transfer_outcome,
        Some(TransferOutcome::Permanent)
    );
    // The duplicate was reconciled to the transfer Dots had: recorded, not paid again.
    let e2 = app.item(batch, "e2").await;
    assert_eq!(e2.transfer_id, Some(earlier.id));
    assert_eq!(e2.state, ItemState::AwaitingPayout);
    for p in ["e0", "e1", "e3"] {
        assert_eq!(
            app.item(batch, p).await.state,
            ItemState::AwaitingPayout,
            "{p}"
        );
    }
    app.assert_paid_exactly_once(batch).await;
    let chunk = &app.store.batch_chunks(batch).await.unwrap()[0];
    assert_eq!(chunk.state, ChunkState::Done, "{:?}", chunk.detail);
}

async fn a_short_app_wallet_inside_a_chunk_holds_the_batch_and_charges_no_item(b: Backend) {
    // $25 in the wallet, 6 × $10: two are paid, the rest refused inside the chunk.
    let sim = SimConfig {
        app_wallet_cents: 2_500,
        ..quiet_sim()
    };
    let mut app = spawn_app(b, sim).await;
    batch_mode(&mut app, 50);
    let mut csv = HEADER.to_string();
    for i in 0..6 {
        app.known_payee(&format!("w{i}"), &format!("557000{i}"))
            .await;
        csv.push_str(&known_payee_row(&format!("w{i}"), "10.00"));
    }
    let batch = app.batch(&csv).await;
    loop {
        if app.engine.chunk_once(None).await.unwrap() == 0 {
            break;
        }
    }
    let rec = app.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(
        rec.hold.map(|h| h.reason),
        Some(HoldReason::InsufficientFunds)
    );
    let items = app.items(batch).await;
    assert_eq!(items.iter().filter(|i| i.transfer_id.is_some()).count(), 2);
    for i in items.iter().filter(|i| i.transfer_id.is_none()) {
        assert_eq!(i.state, ItemState::Transferring, "{}", i.payee_id);
        assert!(!i.transfer_call_open);
        assert_eq!(i.attempts, 0, "{} was charged", i.payee_id);
    }
    // Funded, the hold lifted: the refused items go with their same keys.
    app.sim().fund(100_000);
    app.store
        .lift_funds_hold(batch, payrun::store::now_ms())
        .await
        .unwrap();
    app.engine.refresh_gate().await;
    step_batch_mode(&app, batch).await;
    assert_all_transferred(&app, batch).await;
    for i in app.items(batch).await {
        assert_eq!(i.transfer_key, Some(IdempotencyKey::derive(i.id, 0)));
    }
}

async fn every_fault_mode_on_pays_each_item_exactly_once(b: Backend) {
    let sim = SimConfig {
        error_rate: 0.15,
        throttle_rate: 0.1,
        drop_rate: 0.15,
        stall_rate: 0.05,
        stall_secs: 3.0,
        retry_after_secs: 0,
        seed: 14,
        ..quiet_sim()
    };
    let mut app = spawn_app(b, sim).await;
    batch_mode(&mut app, 7);
    let batch = known_batch(&app, "f", 40).await;
    // And the first two chunks' answers dropped after Dots made them, for certain.
    app.sim().inject(BATCHES, Fault::Drop, 2);
    step_batch_mode(&app, batch).await;
    assert_all_transferred(&app, batch).await;
    assert!(app.sim().request_count(BATCHES) >= 6);
    let transfers = app.ledger().transfers.len();
    assert_eq!(transfers, 40, "one transfer per item");
}

/// Items that went to Dots alone in single mode (answers lost, a crash after the intent) and
/// then batch mode: the ones with a key finish alone (reconciling first where unclear), the
/// fresh ones go in a chunk; nothing is paid twice.
async fn items_whose_keys_were_used_in_single_mode_are_not_paid_twice_in_batch_mode(b: Backend) {
    let mut app = spawn_app(b, quiet_sim()).await;
    let batch = known_batch(&app, "m", 12).await;
    let items = app.items(batch).await;
    // Single mode: the first four answers are lost after Dots made the transfers.
    app.sim().inject(SINGLES, Fault::Drop, 4);
    for i in &items[..4] {
        app.engine.process_item(i.id).await.unwrap();
    }
    // Two more: a crash right after the intent (one after its call reached Dots).
    for (k, i) in items[4..6].iter().enumerate() {
        let user = app.store.payee_user(&i.payee_id).await.unwrap().unwrap();
        let key = IdempotencyKey::derive(i.id, 0);
        app.store
            .begin_transfer_with_intent(i.id, &i.payee_id, user, key, 0, app.engine.now())
            .await
            .unwrap()
            .unwrap();
        if k == 0 {
            app.engine
                .dots
                .create_transfer(&CreateTransfer {
                    amount: i.amount.as_credit(),
                    user_id: user,
                    idempotency_key: Some(key.as_uuid()),
                    metadata: Some(item_metadata(i, "payout")),
                })
                .await
                .unwrap();
        }
    }
    assert_eq!(app.ledger().transfers.len(), 5);
    batch_mode(&mut app, 50);
    step_batch_mode(&app, batch).await;
    assert_all_transferred(&app, batch).await;
    assert_eq!(app.ledger().transfers.len(), 12);
    let chunks = app.store.batch_chunks(batch).await.unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].items, 6, "the six fresh items went in one chunk");
    for i in app.items(batch).await {
        assert_eq!(i.transfer_key, Some(IdempotencyKey::derive(i.id, 0)));
    }
}

async fn a_paused_batch_sends_no_chunk_until_resumed(b: Backend) {
    let mut app = spawn_app(b, quiet_sim()).await;
    batch_mode(&mut app, 50);
    let batch = known_batch(&app, "p", 5).await;
    app.store
        .pause_batch(batch, payrun::store::now_ms())
        .await
        .unwrap();
    assert_eq!(app.engine.chunk_once(None).await.unwrap(), 0);
    assert_eq!(app.sim().request_count(BATCHES), 0);
    app.store
        .resume_batch(batch, payrun::store::now_ms())
        .await
        .unwrap();
    step_batch_mode(&app, batch).await;
    assert_all_transferred(&app, batch).await;
    assert_eq!(app.sim().request_count(BATCHES), 1);
}

async fn the_schema_refuses_unknown_chunk_states(b: Backend) {
    let mut app = spawn_app(b, quiet_sim()).await;
    batch_mode(&mut app, 50);
    let batch = known_batch(&app, "s", 1).await;
    step_batch_mode(&app, batch).await;
    let chunk = app.store.batch_chunks(batch).await.unwrap()[0].id;
    let set =
        |state: &str| format!("UPDATE transfer_chunks SET state = '{state}' WHERE id = '{chunk}'");
    let err = try_exec(&app, &set("sent")).await.unwrap_err();
    assert!(err.to_lowercase().contains("check"), "{err}");
    for s in ChunkState::ALL {
        try_exec(&app, &set(s.as_str())).await.unwrap();
        assert_eq!(app.store.chunk(chunk).await.unwrap().unwrap().state, s);
    }
}

/// A chunker died after its chunk's intent (its call made, or never sent): once the chunk has
/// not been renewed for a lease, another chunker takes it over, looks for its transfer batch
/// with one call and finishes it — found: recorded; not found: the same request again.
async fn a_chunk_left_open_by_a_dead_chunker_is_taken_over_and_finished_with_one_look(b: Backend) {
    for call_made in [true, false] {
        let mut app = spawn_app(b, quiet_sim()).await;
        batch_mode(&mut app, 50);
        let batch = known_batch(&app, "t", 8).await;
        let now = payrun::store::now_ms();
        let opened = app
            .store
            .open_chunk(
                batch,
                "dead-worker#chunker",
                now,
                now,
                now + 60_000,
                50,
                100,
            )
            .await
            .unwrap();
        let chunk = opened.chunk.expect("a chunk");
        assert_eq!(chunk.items.len(), 8);
        if call_made {
            let req = payrun::dots::types::CreateTransferBatch {
                items: chunk
                    .items
                    .iter()
                    .map(|i| payrun::dots::types::TransferBatchItemRequest {
                        amount: i.amount.as_credit(),
                        user_id: i.dots_user_id.unwrap(),
                        idempotency_key: i.transfer_key.unwrap().as_uuid(),
                        tax_exempt: None,
                        metadata: Some(item_metadata(i, "payout")),
                    })
                    .collect(),
                idempotency_key: Some(chunk.key),
                metadata: Some(serde_json::json!({
                    "payrun_batch_id": batch.to_string(),
                    "payrun_chunk_id": chunk.id.to_string(),
                })),
            };
            app.engine.dots.create_transfer_batch(&req).await.unwrap();
        }
        // Still leased and recent: nobody touches it.
        assert_eq!(app.engine.chunk_once(None).await.unwrap(), 0);
        assert_eq!(app.sim().request_count("GET /v2/transfer-batches"), 0);
        // The dead chunker's lease and its chunk's last sign of life are long past.
        let past = now - 600_000;
        try_exec(
            &app,
            &format!(
                "UPDATE items SET lease_until = {past} WHERE chunk_id = '{}'",
                chunk.id
            ),
        )
        .await
        .unwrap();
        try_exec(
            &app,
            &format!(
                "UPDATE transfer_chunks SET updated_at = {past} WHERE id = '{}'",
                chunk.id
            ),
        )
        .await
        .unwrap();
        let posts = app.sim().request_count(BATCHES);
        assert_eq!(app.engine.chunk_once(None).await.unwrap(), 8);
        assert_eq!(app.sim().request_count("GET /v2/transfer-batches"), 1);
        assert_eq!(
            app.sim().request_count(BATCHES),
            posts + u64::from(!call_made),
            "call made {call_made}: re-sent only when not found"
        );
        assert_eq!(
            app.sim().request_count("GET /v2/transfers"),
            0,
            "not item by item"
        );
        let rec = app.store.chunk(chunk.id).await.unwrap().unwrap();
        assert_eq!(rec.state, ChunkState::Done, "{:?}", rec.detail);
        // Paid, and straight on to the payout flow.
        for i in app.items(batch).await {
            assert_eq!(i.state, ItemState::AwaitingPayout, "{}", i.payee_id);
        }
        step_batch_mode(&app, batch).await;
        assert_all_transferred(&app, batch).await;
    }
}

/// Runs `sql` on the test's database; the error's text if it fails.
async fn try_exec(app: &TestApp, sql: &str) -> Result<(), String> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match app.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
            sqlx::query(sql)
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await.unwrap();
            sqlx::query(sql)
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

/// The real binary in batch mode, SIGKILLed while a chunk's call is at Dots (the simulator
/// makes the transfers, then holds the answer): after a restart every payee is paid once.
async fn a_worker_killed_during_a_chunks_call_pays_each_item_once_after_restart(b: Backend) {
    let sim = quiet_sim();
    let app = spawn_app(b, sim.clone()).await;
    let batch = known_batch(&app, "k", 30).await;
    // The first chunk's answer comes after 20 s: the worker is killed before.
    app.sim()
        .inject(BATCHES, Fault::Stall(Duration::from_secs(20)), 1);
    let mut first = batch_worker(&app, &sim);
    let started = Instant::now();
    loop {
        let open = app
            .store
            .batch_chunks(batch)
            .await
            .unwrap()
            .iter()
            .any(|c| c.state == ChunkState::Open);
        if open && !app.ledger().transfers.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk was sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let made = app.ledger().transfers.len();
    assert!(made > 0, "Dots made the first chunk's transfers");
    let _second = batch_worker(&app, &sim);
    let started = Instant::now();
    while !app
        .items(batch)
        .await
        .iter()
        .all(|i| i.state == ItemState::AwaitingPayout)
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the restarted worker did not finish the batch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_all_transferred(&app, batch).await;
    assert_eq!(app.ledger().transfers.len(), 30);
}

/// `payrun worker` in batch mode (chunks of 10) on the test's database and simulator, with
/// short leases so a killed worker's items come back within seconds.
fn batch_worker(app: &TestApp, sim: &SimConfig) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .arg("worker")
        .current_dir(app.dir.path())
        .env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("DOTS_BASE_URL", &app.sim.base_url)
        .env("DOTS_CLIENT_ID", &sim.client_id)
        .env("DOTS_API_KEY", sim.api_key.expose())
        .env("PAYRUN_DOTS_TRANSFER_MODE", "batch")
        .env("PAYRUN_DOTS_TRANSFER_BATCH_SIZE", "10")
        .env("PAYRUN_DOTS_TIMEOUT_SECS", "30")
        .env("PAYRUN_WORKER_LEASE_SECS", "3")
        .env("PAYRUN_WORKER_FEED_MS", "50")
        .env("PAYRUN_WORKER_QUEUE_POLL_MS", "20")
        .env("PAYRUN_WORKER_BACKOFF_BASE_MS", "50")
        .env("PAYRUN_WORKER_BACKOFF_MAX_SECS", "1")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("payrun worker starts")
}
