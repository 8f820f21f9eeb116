//! Shared by the `dashboard` and `browser` tests: the dashboard served on a free port,
//! and a batch with paid items and one item whose payout flow failed for good.

use payrun::batch::BatchId;
use payrun::dots::sim::Fault;
use payrun::store::ItemRecord;

use crate::common::app::*;
use payrun::item::ItemState;

/// Serves `payrun::app::dashboard::router` for `app` on 127.0.0.1, returning its base URL.
/// Loopback over plain HTTP: the session cookie is not `Secure` (`secure_cookie = "auto"`).
pub async fn serve_dashboard(app: &TestApp, token: &str) -> String {
    serve_dashboard_with(app, token, false).await
}

/// `serve_dashboard`, with the session cookie's `Secure` flag chosen by the caller.
#[allow(dead_code)]
pub async fn serve_dashboard_with(app: &TestApp, token: &str, secure_cookie: bool) -> String {
    let options = payrun::app::dashboard::DashboardOptions {
        token: payrun::app::dashboard::DashboardToken::new(token).expect("a long enough token"),
        secure_cookie,
    };
    let router = payrun::app::dashboard::router(app.store.clone(), app.queue.clone(), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .expect("dashboard serves")
    });
    format!("http://{addr}")
}

/// A batch of known payees `paid` (each paid: `awaiting_payout`) plus `broke`, whose payout
/// flow Dots refused with 500 on every attempt: `failed`, with its transfer made. Returns the
/// batch and the failed item.
pub async fn batch_with_a_failed_item(app: &TestApp, paid: &[&str]) -> (BatchId, ItemRecord) {
    let mut csv = HEADER.to_string();
    for (n, payee) in paid.iter().enumerate() {
        app.known_payee(payee, &format!("55509{n:02}")).await;
        csv.push_str(&known_payee_row(payee, &format!("{}.25", 10 + n)));
    }
    app.known_payee("broke", "5550999").await;
    csv.push_str(&known_payee_row("broke", "8.00"));
    let batch = app.batch(&csv).await;
    for payee in paid {
        let id = app.item(batch, payee).await.id;
        app.engine.process_item(id).await.expect("process item");
        assert_eq!(
            app.item(batch, payee).await.state,
            ItemState::AwaitingPayout
        );
    }
    // The payout flow fails, and fails again once the step's time budget is spent.
    app.sim().inject("POST /v2/flows", Fault::Status(500), 2);
    let broke = app.item(batch, "broke").await.id;
    app.engine.process_item(broke).await.expect("process item");
    app.spend_time_budget();
    app.step_until_idle(batch).await;
    let failed = app.item(batch, "broke").await;
    assert_eq!(
        failed.state,
        ItemState::Failed,
        "the payout flow kept failing"
    );
    assert!(failed.transfer_id.is_some(), "its transfer was made");
    (batch, failed)
}
