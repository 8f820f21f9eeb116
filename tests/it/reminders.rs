//! Reminders for unclaimed payouts (`[reminders]`, `jobs::remind`): a payout flow left open
//! gets fresh links on a schedule, each with an `item.reminder` event, then its item shows as
//! unclaimed; the schedule runs on the engine clock, moved by the tests (no sleeps).

use std::time::Duration;

use payrun::batch::BatchId;
use payrun::config::ReminderSettings;
use payrun::dots::sim::Fault;
use payrun::events::{Envelope, EventType};
use payrun::item::ItemState;
use payrun::store::OutboxEvent;
use serde_json::Value;

use crate::common::app::*;

on_both_backends!(
    an_unclaimed_payout_gets_numbered_reminders_with_fresh_links_then_shows_as_unclaimed,
    a_payee_who_completes_after_the_first_reminder_gets_no_more_and_completes,
    reminders_are_off_by_default,
    a_reminder_call_whose_answer_is_lost_reuses_its_flow_instead_of_making_a_second,
);

/// A compressed schedule: each reminder a minute after the previous link, on the engine clock
/// the tests move (a minute, not a second, so the wall-clock time a step takes on a loaded
/// machine never makes a second reminder due within one step).
fn compressed() -> ReminderSettings {
    ReminderSettings {
        enabled: true,
        schedule_secs: vec![60, 60, 60],
    }
}

/// A test app whose engine sends reminders on `compressed()`, and one known payee's batch
/// stepped to `awaiting_payout`.
async fn app_with_open_payout(
    b: Backend,
    reminders: Option<ReminderSettings>,
) -> (TestApp, BatchId) {
    let mut app = spawn_app(b, quiet_sim()).await;
    if let Some(r) = reminders {
        app.engine = app.engine.clone().with_reminders(r);
    }
    app.known_payee("k1", "5550901").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("k1", "25.00")))
        .await;
    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "k1").await.state, ItemState::AwaitingPayout);
    (app, batch)
}

/// The item's outbound events, in version order.
async fn item_events(app: &TestApp, batch: BatchId) -> Vec<(OutboxEvent, Envelope)> {
    let item = app.item(batch, "k1").await;
    app.store
        .outbox_events(Some(batch))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.item_id == Some(item.id))
        .map(|e| {
            let body = serde_json::from_str(&e.body).unwrap();
            (e, body)
        })
        .collect()
}

/// Moves the engine clock past the next reminder's time and steps the batch.
async fn next_reminder_time(app: &TestApp, batch: BatchId) {
    app.engine.advance_clock(Duration::from_secs(61));
    app.step_until_idle(batch).await;
}

/// `payrun status BATCH [--json]` through the binary: (stdout, exit code).
fn payrun_status(app: &TestApp, batch: BatchId, json: bool) -> String {
    let mut args = vec!["status".to_string(), batch.to_string()];
    if json {
        args.push("--json".into());
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(&args)
        .current_dir(app.dir.path())
        .env("PAYRUN_DATABASE_URL", &app.db_url)
        .env("RUST_LOG", "payrun=warn")
        .output()
        .expect("run payrun");
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn an_unclaimed_payout_gets_numbered_reminders_with_fresh_links_then_shows_as_unclaimed(
    b: Backend,
) {
    let (app, batch) = app_with_open_payout(b, Some(compressed())).await;
    let mut links = vec![app.item(batch, "k1").await.payout_link.unwrap()];
    let mut flows = vec![app.item(batch, "k1").await.payout_flow_id.unwrap()];
    for n in 1..=3 {
        next_reminder_time(&app, batch).await;
        let item = app.item(batch, "k1").await;
        assert_eq!(item.state, ItemState::AwaitingPayout, "after reminder {n}");
        assert_eq!(item.reminders, n);
        assert_eq!(
            item.unclaimed_at, None,
            "not unclaimed before its grace ends"
        );
        let link = item.payout_link.clone().unwrap();
        assert!(!links.contains(&link), "reminder {n} has a fresh link");
        let flow = item.payout_flow_id.unwrap();
        assert!(!flows.contains(&flow), "reminder {n} has a new flow");
        let at_dots = app.engine.dots.get_flow(flow).await.expect("Dots has it");
        assert_eq!(at_dots.link, link);
        links.push(link);
        flows.push(flow);
    }

    let events = item_events(&app, batch).await;
    let kinds: Vec<EventType> = events.iter().map(|(e, _)| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventType::ItemPayoutLink,
            EventType::ItemReminder,
            EventType::ItemReminder,
            EventType::ItemReminder
        ]
    );
    let versions: Vec<i64> = events.iter().map(|(e, _)| e.version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    for (i, (_, body)) in events.iter().enumerate() {
        assert_eq!(body.data["link"], links[i].as_str(), "event {i}'s link");
        assert!(body.data["link_expires_at"].is_string());
        if i == 0 {
            assert!(body.data.get("reminder").is_none());
        } else {
            assert_eq!(body.data["reminder"], i as i64);
        }
    }

    // Still open the last delay again after reminder 3: unclaimed, nothing reversed.
    let status = payrun::app::batch_status(&app.store, batch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.unclaimed, 0);
    next_reminder_time(&app, batch).await;
    let item = app.item(batch, "k1").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert!(item.unclaimed_at.is_some());
    assert_eq!(item.reminders, 3);
    next_reminder_time(&app, batch).await;
    assert_eq!(
        item_events(&app, batch).await.len(),
        4,
        "no reminder after unclaimed"
    );
    assert_eq!(
        app.ledger().transfers.len(),
        1,
        "the money moved once and stays"
    );

    let v: Value = serde_json::from_str(&payrun_status(&app, batch, true)).unwrap();
    assert_eq!(v[0]["unclaimed"], 1);
    assert_eq!(v[0]["unclaimed_cents"], 2500);
    assert_eq!(v[0]["unclaimed_items"][0]["item_id"], item.id.to_string());
    assert_eq!(v[0]["unclaimed_items"][0]["reminders"], 3);
    let text = payrun_status(&app, batch, false);
    assert!(text.contains("unclaimed"), "{text}");
    assert!(text.contains(&item.id.to_string()), "{text}");

    // An operator's fresh link (`retry-flow`) clears the mark: the new link gets the last
    // delay again before the item is unclaimed once more.
    let mut q = app.queue.clone();
    payrun::app::ops::retry_flow(&app.store, &mut q, item.id)
        .await
        .unwrap()
        .unwrap();
    app.step_until_idle(batch).await;
    let item = app.item(batch, "k1").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(item.unclaimed_at, None);
    let events = item_events(&app, batch).await;
    assert_eq!(events.last().unwrap().0.kind, EventType::ItemPayoutLink);
    next_reminder_time(&app, batch).await;
    assert!(app.item(batch, "k1").await.unclaimed_at.is_some());
}

async fn a_payee_who_completes_after_the_first_reminder_gets_no_more_and_completes(b: Backend) {
    let (app, batch) = app_with_open_payout(b, Some(compressed())).await;
    next_reminder_time(&app, batch).await;
    let item = app.item(batch, "k1").await;
    assert_eq!(item.reminders, 1);
    app.sim().complete_flow(item.payout_flow_id.unwrap());
    app.step_until_idle(batch).await;
    assert_eq!(app.item(batch, "k1").await.state, ItemState::Completed);
    for _ in 0..4 {
        next_reminder_time(&app, batch).await;
    }
    let item = app.item(batch, "k1").await;
    assert_eq!(item.state, ItemState::Completed);
    assert_eq!(item.reminders, 1);
    assert_eq!(item.unclaimed_at, None);
    let kinds: Vec<EventType> = item_events(&app, batch)
        .await
        .iter()
        .map(|(e, _)| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventType::ItemPayoutLink,
            EventType::ItemReminder,
            EventType::ItemCompleted
        ]
    );
    let status = payrun::app::batch_status(&app.store, batch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.unclaimed, 0);
}

async fn reminders_are_off_by_default(b: Backend) {
    assert!(!payrun::config::Settings::builtin().reminders.enabled);
    let (app, batch) = app_with_open_payout(b, None).await;
    let flow = app.item(batch, "k1").await.payout_flow_id;
    app.engine.advance_clock(Duration::from_secs(30 * 86_400));
    app.step_until_idle(batch).await;
    let item = app.item(batch, "k1").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(item.payout_flow_id, flow, "no fresh flow");
    assert_eq!((item.reminders, item.reminder_due_at), (0, None));
    assert_eq!(item.unclaimed_at, None);
    let kinds: Vec<EventType> = item_events(&app, batch)
        .await
        .iter()
        .map(|(e, _)| e.kind)
        .collect();
    assert_eq!(kinds, [EventType::ItemPayoutLink]);
}

async fn a_reminder_call_whose_answer_is_lost_reuses_its_flow_instead_of_making_a_second(
    b: Backend,
) {
    let (app, batch) = app_with_open_payout(b, Some(compressed())).await;
    let first = app.item(batch, "k1").await.payout_flow_id.unwrap();
    let posts = app.sim().request_count("POST /v2/flows");
    // Dots makes reminder 1's flow, and the answer is lost on the way back.
    app.sim().inject("POST /v2/flows", Fault::Drop, 1);
    next_reminder_time(&app, batch).await;
    let item = app.item(batch, "k1").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert_eq!(item.reminders, 1);
    assert_ne!(item.payout_flow_id, Some(first));
    assert_eq!(
        app.sim().request_count("POST /v2/flows"),
        posts + 1,
        "one flow for the reminder, found again after the lost answer"
    );
    let history = app.event_kinds(item.id).await;
    assert!(
        history.iter().any(|k| k == "reconcile"),
        "the lost answer was reconciled: {history:?}"
    );
    let at_dots = app
        .engine
        .dots
        .get_flow(item.payout_flow_id.unwrap())
        .await
        .unwrap();
    assert_eq!(
        at_dots.metadata.as_ref().unwrap()["payrun_reminder"],
        format!("{}/1", item.id).as_str()
    );
    let kinds: Vec<EventType> = item_events(&app, batch)
        .await
        .iter()
        .map(|(e, _)| e.kind)
        .collect();
    assert_eq!(kinds, [EventType::ItemPayoutLink, EventType::ItemReminder]);
}
