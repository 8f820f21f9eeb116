//! The store enforces the item state machine: the enum's transitions, the schema's CHECK
//! constraint, and an append-only event log — on both backends, with both migration sets
//! (ours and apalis') in one fresh database.

use crate::common::app::*;
use payrun::batch::BatchState;
use payrun::item::ItemState;
use payrun::store::{Store, StoreError};
use uuid::Uuid;

on_both_backends!(
    illegal_transitions_are_refused_and_change_nothing,
    a_transition_from_a_state_the_item_has_left_does_nothing,
    a_first_transfer_commits_its_state_change_and_intent_together,
    a_jobs_last_write_releases_only_its_own_lease,
    the_schema_refuses_unknown_states,
    the_schema_refuses_unknown_batch_statuses,
    metrics_show_the_counters_and_the_items_by_state,
    the_schema_refuses_unknown_transfer_outcomes,
    the_event_log_is_append_only,
    migrations_run_twice_on_one_database_without_tripping,
);

async fn stored_item(app: &TestApp) -> payrun::store::ItemRecord {
    let batch = app
        .batch(&format!(
            "{HEADER}{}",
            new_payee_row("a", "1.00", "5550001")
        ))
        .await;
    app.item(batch, "a").await
}

async fn illegal_transitions_are_refused_and_change_nothing(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let item = stored_item(&app).await;
    let id = item.id;
    // completed -> failed is not a transition of the state machine: refused before any SQL.
    let err = app
        .store
        .fail_item(id, ItemState::Completed, "late failure")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IllegalTransition {
                from: ItemState::Completed,
                to: ItemState::Failed
            }
        ),
        "{err}"
    );
    // Steps that need another state leave a pending item alone.
    assert!(
        app.store
            .record_payout_flow(
                id,
                payrun::store::FlowMade {
                    flow_id: Uuid::new_v4(),
                    link: "http://x",
                    next_poll_at: 0,
                    reminder: None,
                    reminder_due_at: None,
                },
                None
            )
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        app.store
            .record_transfer_done(id, Uuid::new_v4(), "x")
            .await
            .unwrap()
            .is_none(),
        "not transferring"
    );
    assert!(app.store.complete_item(id, 0).await.unwrap().is_none());
    let after = app.store.item(id).await.unwrap().unwrap();
    assert_eq!(after.state, ItemState::Pending);
    assert!(after.transfer_id.is_none());
}

async fn a_transition_from_a_state_the_item_has_left_does_nothing(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let item = stored_item(&app).await;
    let id = item.id;
    let user = Uuid::new_v4();
    let moved = app
        .store
        .begin_transfer(id, ItemState::Pending, "a", user)
        .await
        .unwrap()
        .expect("pending -> transferring");
    // The row comes back as written.
    assert_eq!(moved.state, ItemState::Transferring);
    assert_eq!(moved.dots_user_id, Some(user));
    // A second worker acting on a stale read of `pending` is a no-op.
    assert!(
        app.store
            .begin_onboarding(id, Uuid::new_v4(), "http://x", 0, None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        app.store
            .begin_transfer(id, ItemState::Pending, "a", Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
    let after = app.store.item(id).await.unwrap().unwrap();
    assert_eq!(after.state, ItemState::Transferring);
    assert_eq!(after.dots_user_id, Some(user));
    let to_states = app.state_history(id).await;
    assert_eq!(to_states, [ItemState::Pending, ItemState::Transferring]);
    // The payee's user was remembered with the transition that happened, not the one that did not.
    assert_eq!(app.store.payee_user("a").await.unwrap(), Some(user));
    // Remembering the same user again changes nothing; a new one replaces it.
    app.store.remember_payee("a", user).await.unwrap();
    assert_eq!(app.store.payee_user("a").await.unwrap(), Some(user));
    let other = Uuid::new_v4();
    app.store.remember_payee("a", other).await.unwrap();
    assert_eq!(app.store.payee_user("a").await.unwrap(), Some(other));
}

async fn a_first_transfer_commits_its_state_change_and_intent_together(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let id = stored_item(&app).await.id;
    let user = Uuid::new_v4();
    let key = payrun::item::IdempotencyKey::derive(id, 0);
    let moved = app
        .store
        .begin_transfer_with_intent(id, "a", user, key, 0, 1234)
        .await
        .unwrap()
        .expect("pending -> transferring");
    assert_eq!(moved.state, ItemState::Transferring);
    assert_eq!(moved.dots_user_id, Some(user));
    assert_eq!(moved.transfer_key, Some(key));
    assert_eq!(moved.transfer_key_at, Some(1234));
    assert!(moved.transfer_call_open);
    assert_eq!(moved.transfer_attempts, 1);
    assert_eq!(app.store.payee_user("a").await.unwrap(), Some(user));
    let events = app.store.item_events(id).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["state", "state", "transfer_intent"]);
    assert_eq!(events[1].to_state.as_deref(), Some("transferring"));
    // Only from `pending`: a stale second attempt changes nothing.
    assert!(
        app.store
            .begin_transfer_with_intent(id, "a", user, key, 0, 5678)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(app.store.item_events(id).await.unwrap().len(), 3);
}

async fn a_jobs_last_write_releases_only_its_own_lease(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let id = stored_item(&app).await.id;
    let leased = app
        .store
        .try_lease(id, "w1", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.lease_owner.as_deref(), Some("w1"));
    // A writer that does not hold the lease leaves it alone.
    let row = app
        .store
        .begin_onboarding(id, Uuid::new_v4(), "http://x", 0, Some("w2"))
        .await
        .unwrap()
        .expect("pending -> onboarding");
    assert_eq!(row.lease_owner.as_deref(), Some("w1"));
    assert_eq!(row.lease_until, leased.lease_until);
    // The holder's last write releases it, as release_lease would.
    app.store
        .renew_flow(id, ItemState::Onboarding)
        .await
        .unwrap()
        .expect("onboarding -> pending");
    let row = app
        .store
        .begin_onboarding(id, Uuid::new_v4(), "http://x", 0, Some("w1"))
        .await
        .unwrap()
        .expect("pending -> onboarding");
    assert_eq!(row.lease_owner, None);
    assert_eq!(row.lease_until, 0);
    assert!(
        app.store
            .try_lease(id, "w2", 60_000)
            .await
            .unwrap()
            .is_some()
    );
}

async fn raw(app: &TestApp, sql: &str) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match app.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&app.db_url).await?;
            Ok(sqlx::query(sql).execute(&pool).await?.rows_affected())
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.db_url).await?;
            Ok(sqlx::query(sql).execute(&pool).await?.rows_affected())
        }
    }
}

async fn the_schema_refuses_unknown_transfer_outcomes(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let item = stored_item(&app).await;
    let set = |v: &str| {
        format!(
            "UPDATE items SET transfer_outcome = {v} WHERE id = '{}'",
            item.id
        )
    };
    let err = raw(&app, &set("'maybe'")).await.unwrap_err();
    let msg = err.to_string().to_lowercase();
    assert!(
        msg.contains("check") || msg.contains("transfer_outcome"),
        "{err}"
    );
    // Every outcome the enum knows, and none, is accepted by the schema.
    for o in payrun::item::TransferOutcome::ALL {
        raw(&app, &set(&format!("'{}'", o.as_str()))).await.unwrap();
    }
    raw(&app, &set("NULL")).await.unwrap();
}

async fn the_schema_refuses_unknown_states(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let item = stored_item(&app).await;
    let err = raw(
        &app,
        &format!("UPDATE items SET state = 'paid' WHERE id = '{}'", item.id),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("check"), "{err}");
    // Every state the enum knows is accepted by the schema.
    for s in ItemState::ALL {
        raw(
            &app,
            &format!(
                "UPDATE items SET state = '{}' WHERE id = '{}'",
                s.as_str(),
                item.id
            ),
        )
        .await
        .unwrap();
    }
}

async fn the_event_log_is_append_only(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let item = stored_item(&app).await;
    let id = item.id;
    app.store
        .record_event(id, "note", "a row to protect")
        .await
        .unwrap();
    assert!(
        raw(&app, "UPDATE item_events SET detail = 'rewritten'")
            .await
            .is_err()
    );
    assert!(raw(&app, "DELETE FROM item_events").await.is_err());
    // The stored row, and the item's creation read from its batch.
    let events = app.store.item_events(id).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["state", "note"]);
    assert_eq!(events[0].to_state.as_deref(), Some("pending"));
}

async fn migrations_run_twice_on_one_database_without_tripping(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let item = stored_item(&app).await;
    // A second process starting on the same database runs both migration sets again.
    let again = Store::connect(&app.db_url)
        .await
        .expect("second connect migrates cleanly");
    assert!(again.item(item.id).await.unwrap().is_some());
    assert_eq!(again.queued_jobs().await.unwrap(), 1);
}

async fn the_schema_refuses_unknown_batch_statuses(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let item = stored_item(&app).await;
    let set = |status: &str| {
        format!(
            "UPDATE batches SET status = '{status}' WHERE id = '{}'",
            item.batch_id
        )
    };
    let err = raw(&app, &set("running")).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("check"), "{err}");
    // Every status the enum knows is accepted by the schema and read back as itself.
    let batch = item.batch_id;
    for s in BatchState::ALL {
        raw(&app, &set(s.as_str())).await.unwrap();
        assert_eq!(app.store.batch(batch).await.unwrap().unwrap().status, s);
    }
}

async fn metrics_show_the_counters_and_the_items_by_state(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    stored_item(&app).await;
    let text = payrun::app::metrics_endpoint::render(&app.store)
        .await
        .unwrap();
    for series in [
        // Labelled counters show once bumped; the histogram and the gauges always do.
        "# TYPE payrun_job_seconds histogram",
        "payrun_items{state=\"pending\"} 1",
        "payrun_items{state=\"completed\"} 0",
        "payrun_queue_depth ",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}
