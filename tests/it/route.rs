//! The payee-friendly route (`worker.payout_flow`): by default every payee gets a payout flow;
//! with `unless_auto_payout` a payee whose Dots user has auto payout enabled and a default payout
//! method gets none, and the item completes once its transfer is completed (waiting while it is
//! pending). The user is read once per `worker.user_cache_secs`; `submit --dry-run` counts routes.

use std::time::Duration;

use payrun::app::routes::{RouteCounts, route_counts};
use payrun::config::PayoutFlowSetting;
use payrun::dots::client::{ClientConfig, DotsClient};
use payrun::events::EventType;
use payrun::item::ItemState;
use payrun::jobs::Engine;
use payrun::store::ItemRecord;

use crate::common::app::*;

const GET_USER: &str = "GET /v2/users/{id}";
const CACHE_SECS: u64 = 600;

/// A test app whose worker follows `route`.
async fn app_with(b: Backend, route: PayoutFlowSetting) -> TestApp {
    let mut app = spawn_app(b, quiet_sim()).await;
    let mut w = app.settings.worker.clone();
    w.payout_flow = route;
    w.user_cache_secs = CACHE_SECS;
    let dots = DotsClient::new(ClientConfig::from_settings(&app.settings.dots, &w)).unwrap();
    app.engine = Engine::new(app.store.clone(), dots, w.clone(), "route-test");
    app.settings.worker = w;
    app
}

/// A known payee whose Dots user has `method` as default payout method and auto payout `auto`.
async fn payee(
    app: &TestApp,
    id: &str,
    phone: &str,
    method: Option<&str>,
    auto: bool,
) -> uuid::Uuid {
    let user = app.known_payee(id, phone).await;
    app.sim().set_auto_payout(user, method, Some(auto)).unwrap();
    user
}

async fn item_events(app: &TestApp, item: &ItemRecord) -> Vec<EventType> {
    app.store
        .outbox_events(Some(item.batch_id))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.item_id == Some(item.id))
        .map(|e| e.kind)
        .collect()
}

/// Runs the item's job once, due now.
async fn run_item(app: &TestApp, item: &ItemRecord) -> ItemRecord {
    app.store.retry_now(item.id).await.unwrap();
    app.engine.process_item(item.id).await.unwrap();
    app.store.item(item.id).await.unwrap().unwrap()
}

on_both_backends!(
    by_default_a_payee_with_auto_payout_still_gets_a_payout_flow,
    unless_auto_payout_an_auto_payout_payee_gets_no_flow_and_completes_when_the_transfer_completes,
    unless_auto_payout_a_payee_without_auto_payout_or_without_a_default_method_gets_the_flow,
    the_dots_user_is_read_once_per_cache_period_for_several_items_of_one_payee,
    a_dry_run_counts_the_items_taking_each_route,
);

async fn by_default_a_payee_with_auto_payout_still_gets_a_payout_flow(b: Backend) {
    let app = app_with(b, PayoutFlowSetting::Always).await;
    payee(&app, "auto", "5550801", Some("paypal"), true).await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("auto", "12.00")))
        .await;
    app.step_until_idle(batch).await;
    let item = app.item(batch, "auto").await;
    assert_eq!(item.state, ItemState::AwaitingPayout);
    assert!(item.payout_link.is_some());
    assert!(
        item_events(&app, &item)
            .await
            .contains(&EventType::ItemPayoutLink)
    );
    assert_eq!(
        app.sim().request_count(GET_USER),
        0,
        "the default never reads the user"
    );
}

async fn unless_auto_payout_an_auto_payout_payee_gets_no_flow_and_completes_when_the_transfer_completes(
    b: Backend,
) {
    let app = app_with(b, PayoutFlowSetting::UnlessAutoPayout).await;
    let user = payee(&app, "auto", "5550802", Some("ach"), true).await;
    app.sim().hold_transfers(user);
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("auto", "12.00")))
        .await;
    let item = app.item(batch, "auto").await;
    // The transfer is made but still pending at Dots: the item waits, due again later.
    let before = app.engine.now();
    let item = run_item(&app, &item).await;
    assert_eq!(item.state, ItemState::Transferred);
    assert!(item.transfer_id.is_some());
    assert!(item.next_attempt_at > before, "due again later, not now");
    assert_eq!(item.attempts, 0, "waiting is not a failed attempt");
    let item = run_item(&app, &item).await;
    assert_eq!(
        item.state,
        ItemState::Transferred,
        "still pending: still waiting"
    );
    assert_eq!(item.polls, 2);
    // Dots completes the transfer: the item completes, with no flow.
    assert_eq!(app.sim().release_transfers(user), 1);
    let item = run_item(&app, &item).await;
    assert_eq!(item.state, ItemState::Completed);
    assert_eq!(item.payout_flow_id, None);
    assert_eq!(item.payout_link, None);
    assert_eq!(app.sim().request_count("POST /v2/flows"), 0);
    assert_eq!(
        app.sim().request_count(GET_USER),
        1,
        "one read, then the stored answer"
    );
    assert_eq!(item_events(&app, &item).await, [EventType::ItemCompleted]);
    let ledger = app.sim().ledger();
    assert_eq!(ledger.transfers.len(), 1, "paid once");
}

async fn unless_auto_payout_a_payee_without_auto_payout_or_without_a_default_method_gets_the_flow(
    b: Backend,
) {
    let app = app_with(b, PayoutFlowSetting::UnlessAutoPayout).await;
    payee(&app, "no-method", "5550803", None, true).await;
    payee(&app, "no-auto", "5550804", Some("venmo"), false).await;
    app.known_payee("plain", "5550805").await;
    let batch = app
        .batch(&format!(
            "{HEADER}{}{}{}",
            known_payee_row("no-method", "1.00"),
            known_payee_row("no-auto", "2.00"),
            known_payee_row("plain", "3.00"),
        ))
        .await;
    app.step_until_idle(batch).await;
    for p in ["no-method", "no-auto", "plain"] {
        let item = app.item(batch, p).await;
        assert_eq!(item.state, ItemState::AwaitingPayout, "{p}");
        assert!(item.payout_link.is_some(), "{p}");
        assert!(
            item_events(&app, &item)
                .await
                .contains(&EventType::ItemPayoutLink),
            "{p}"
        );
    }
    assert_eq!(app.sim().request_count(GET_USER), 3);
}

async fn the_dots_user_is_read_once_per_cache_period_for_several_items_of_one_payee(b: Backend) {
    let app = app_with(b, PayoutFlowSetting::UnlessAutoPayout).await;
    payee(&app, "auto", "5550806", Some("paypal"), true).await;
    let mut items = Vec::new();
    for amount in ["1.00", "2.00", "3.00"] {
        let batch = app
            .batch(&format!("{HEADER}{}", known_payee_row("auto", amount)))
            .await;
        app.step_until_idle(batch).await;
        items.push(app.item(batch, "auto").await);
    }
    assert!(items.iter().all(|i| i.state == ItemState::Completed));
    assert_eq!(
        app.sim().request_count(GET_USER),
        1,
        "three items, one read"
    );
    // Past the cache period the answer is read again: the payee turned auto payout off.
    let user = items[0].dots_user_id.unwrap();
    app.sim().set_auto_payout(user, None, Some(false)).unwrap();
    app.engine
        .advance_clock(Duration::from_secs(CACHE_SECS + 1));
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("auto", "4.00")))
        .await;
    app.step_until_idle(batch).await;
    assert_eq!(app.sim().request_count(GET_USER), 2);
    assert_eq!(
        app.item(batch, "auto").await.state,
        ItemState::AwaitingPayout
    );
}

async fn a_dry_run_counts_the_items_taking_each_route(b: Backend) {
    let app = app_with(b, PayoutFlowSetting::UnlessAutoPayout).await;
    payee(&app, "auto1", "5550807", Some("paypal"), true).await;
    payee(&app, "auto2", "5550808", Some("ach"), true).await;
    payee(&app, "flow", "5550809", Some("ach"), false).await;
    let csv = format!(
        "{HEADER}{}{}{}{}",
        known_payee_row("auto1", "1.00"),
        known_payee_row("auto2", "2.00"),
        known_payee_row("flow", "3.00"),
        new_payee_row("new", "4.00", "5550810"),
    );
    let path = app.write_csv("dry.csv", &csv);
    let dots = DotsClient::new(ClientConfig::from_settings(
        &app.settings.dots,
        &app.settings.worker,
    ))
    .unwrap();
    let mut always = app.settings.worker.clone();
    always.payout_flow = PayoutFlowSetting::Always;
    let now = app.engine.now();
    let counts = route_counts(&app.store, Some(&dots), &path, &always, now)
        .await
        .unwrap();
    let want = |payout_flow, auto_payout| RouteCounts {
        payout_flow,
        auto_payout,
        onboarding_first: 1,
        unread: 0,
    };
    assert_eq!(counts, want(3, 0));
    assert_eq!(app.sim().request_count(GET_USER), 0);
    let w = &app.settings.worker;
    let counts = route_counts(&app.store, Some(&dots), &path, w, now)
        .await
        .unwrap();
    assert_eq!(counts, want(1, 2));
    assert_eq!(app.sim().request_count(GET_USER), 3);
    // Again: the stored answers are trusted, no new read.
    let counts = route_counts(&app.store, Some(&dots), &path, w, now)
        .await
        .unwrap();
    assert_eq!(counts, want(1, 2));
    assert_eq!(app.sim().request_count(GET_USER), 3);
    // Nothing was stored as a batch.
    assert!(app.store.list_batches(10).await.unwrap().is_empty());
}
