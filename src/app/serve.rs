//! `payrun serve`: the HTTP face of payrun — the Dots webhook receiver (`POST /webhooks/dots`),
//! `/healthz`, `/metrics`, and the operators' dashboard. Webhooks trigger an immediate refresh
//! of the flow or transfer they name (through the same code the poller runs); a worker does the
//! rest. The server itself never moves money.

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

use crate::jobs::poll::{self, Polled};
use crate::jobs::{Engine, Queue};
use crate::webhook::{Verifier, WebhookEvent, WebhookState, server};

/// How long a transfer webhook waits before looking (see the handler).
pub const TRANSFER_WEBHOOK_DELAY: Duration = Duration::from_secs(5);

/// How long a flow webhook naming no waiting item waits before looking once more.
pub const FLOW_WEBHOOK_RETRY: Duration = Duration::from_secs(1);

/// The handler webhooks feed: refresh, then enqueue the item if it has work now.
pub fn webhook_handler(
    engine: Engine,
    queue: Queue,
) -> impl Fn(WebhookEvent) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static {
    move |event| {
        let (engine, mut queue) = (engine.clone(), queue.clone());
        Box::pin(async move {
            let kind = match &event {
                WebhookEvent::FlowUpdated { .. } => "flow.updated",
                WebhookEvent::TransferUpdated { .. } => "transfer",
                WebhookEvent::Other { .. } => "other",
            };
            crate::metrics::webhook(kind);
            let enqueue = match event {
                WebhookEvent::FlowUpdated { flow_id } => {
                    let mut refreshed = poll::refresh_flow(&engine, flow_id).await;
                    if matches!(refreshed, Ok(None)) {
                        // A payee can finish a flow before the worker that made it has recorded
                        // it (the webhook races the worker's commit): look once more, shortly.
                        tokio::time::sleep(FLOW_WEBHOOK_RETRY).await;
                        refreshed = poll::refresh_flow(&engine, flow_id).await;
                    }
                    match refreshed {
                        Ok(Some(Polled::Onboarded(id))) => Some(id),
                        Ok(_) => None,
                        Err(e) => {
                            warn!(%flow_id, error = %e, "webhook refresh failed; the poller will catch up");
                            None
                        }
                    }
                }
                WebhookEvent::TransferUpdated { transfer_id } => {
                    // Dots announces a transfer as it answers the POST: give the worker a moment
                    // to record its own outcome, so the usual case costs no extra Dots call.
                    tokio::time::sleep(TRANSFER_WEBHOOK_DELAY).await;
                    match poll::refresh_transfer(&engine, transfer_id).await {
                        Ok(id) => id,
                        Err(e) => {
                            warn!(%transfer_id, error = %e, "webhook refresh failed; the worker reconciles");
                            None
                        }
                    }
                }
                WebhookEvent::Other { .. } => None,
            };
            // The item is due now: hand it to the queue at once (else the feeder will).
            if let Some(id) = enqueue
                && let Err(e) = crate::jobs::feed::feed_once(&engine, &mut queue).await
            {
                warn!(item_id = %id, error = %e, "cannot feed the queue after a webhook; the feeder will");
            }
        })
    }
}

/// The router `serve` runs: webhooks (when a secret is configured), health, metrics, dashboard.
/// A webhook secret under 16 key bytes is refused here (the error never shows it); a short
/// dashboard token cannot be a [`DashboardToken`](super::dashboard::DashboardToken).
pub fn router(
    engine: Engine,
    queue: Queue,
    webhook_secret: Option<&str>,
    dashboard: Option<super::dashboard::DashboardOptions>,
) -> anyhow::Result<axum::Router> {
    let mut app = super::metrics_endpoint::router(engine.store.clone(), engine.health.clone());
    match webhook_secret {
        Some(secret) => {
            let verifier =
                Verifier::new(secret).map_err(|e| anyhow::anyhow!("DOTS_WEBHOOK_SECRET: {e}"))?;
            let state = WebhookState::new(verifier, webhook_handler(engine.clone(), queue.clone()));
            app = app.merge(server::router(state));
        }
        None => warn!(
            "DOTS_WEBHOOK_SECRET is not set: the webhook endpoint is off, flows are only polled"
        ),
    }
    if let Some(options) = dashboard {
        let wallet = super::wallet::WalletSource {
            dots: engine.dots.clone(),
            funding: engine.funds.config.clone(),
        };
        app = app.merge(super::dashboard::router_with_wallet(
            engine.store.clone(),
            queue,
            options,
            Some(wallet),
        ));
    } else {
        warn!("PAYRUN_DASHBOARD_TOKEN is not set: the dashboard is off");
    }
    Ok(app)
}

/// Serves `router` on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: &str,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(addr = %listener.local_addr()?, "serving");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Health and metrics beside a worker, when `PAYRUN_HEALTH_LISTEN` / `--health-listen` is set.
pub fn spawn_health(listen: String, store: crate::store::Store, health: crate::health::Health) {
    tokio::spawn(async move {
        let never = futures::future::pending::<()>();
        if let Err(e) = serve(
            &listen,
            super::metrics_endpoint::router(store, health),
            never,
        )
        .await
        {
            warn!(%listen, error = %e, "health endpoint failed");
        }
    });
    let _ = Duration::ZERO;
}
