//! The operators' dashboard: server-rendered HTML pages (`html` handlers, `pages` maud
//! templates) and the JSON API behind them
//! (`api`), mounted by `payrun serve` when `PAYRUN_DASHBOARD_TOKEN` is set.
//!
//! It owns no logic of its own: every button and API action calls the same `app::ops` and
//! `app::control` functions the CLI does (`approve`, `cancel`, `rerun`, `retry_flow`, `show`,
//! `pause`, `resume`), and every view
//! reads through `app::batch_status` / `list_status` and the store, so the dashboard can never
//! do what `payrun approve|cancel|rerun|retry-flow` would refuse.
//!
//! Guarantees:
//! - **Auth**: every route but `/login` needs the token (at least 32 characters), either
//!   `Authorization: Bearer <token>` or the `payrun_token` session cookie (HttpOnly,
//!   SameSite=Strict, `Secure` unless served on loopback over plain HTTP: `[dashboard]
//!   secure_cookie`) that `GET /login?token=` sets. The cookie holds a value derived from the
//!   token, never the token (`auth`). Without either: 401, pages and API alike. Everything is
//!   compared in constant time (HMAC-SHA256 under a per-process random key, `verify_slice`),
//!   and never logged.
//! - **CSRF**: a POST authenticated by the cookie alone must also carry the CSRF value, an
//!   HMAC of the token (a hidden `csrf` form field, or the `X-CSRF-Token` header for the API);
//!   a bearer header needs nothing more, since a browser never adds one by itself.
//! - **Escaping**: everything user-supplied (payee ids, errors, flash messages) is HTML-escaped
//!   by the maud templates, with control and bidi characters shown as `\u{..}`
//!   (`text::printable`, through `pages::Shown`);
//!   pages send a CSP that allows no script at all.

mod actions;
mod api;
mod auth;
mod html;
mod pages;

pub use auth::{DashboardToken, MIN_TOKEN_CHARS, TokenError};

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use auth::Auth;

use crate::app::ops::OpsError;
use crate::jobs::Queue;
use crate::store::{ItemRecord, Store, StoreError};

/// The cookie `/login` sets.
pub const COOKIE: &str = "payrun_token";
/// The header an API client authenticated by the cookie sends the CSRF value in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Clone)]
struct Dash {
    store: Store,
    queue: Queue,
    auth: Arc<Auth>,
    /// Whether the session cookie is marked `Secure` (see [`DashboardOptions`]).
    secure_cookie: bool,
    /// The App wallet shown on a batch's page (with `DOTS_APP_ID` set).
    wallet: Option<crate::app::wallet::WalletSource>,
}

/// How the dashboard is served.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    pub token: DashboardToken,
    /// Mark the session cookie `Secure` (sent over HTTPS only): the `[dashboard]
    /// secure_cookie` setting, resolved against the listen address
    /// (`config::SecureCookie::resolve`).
    pub secure_cookie: bool,
}

/// How a request proved it holds the token (put in the request's extensions by `require_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthVia {
    Bearer,
    Cookie,
}

/// The dashboard and its API, every route behind the token (see the module doc).
pub fn router(store: Store, queue: Queue, options: DashboardOptions) -> Router {
    router_with_wallet(store, queue, options, None)
}

/// [`router`], with the batch page showing the App wallet beside the batch's total.
pub fn router_with_wallet(
    store: Store,
    queue: Queue,
    options: DashboardOptions,
    wallet: Option<crate::app::wallet::WalletSource>,
) -> Router {
    let dash = Dash {
        store,
        queue,
        auth: Arc::new(Auth::new(&options.token)),
        secure_cookie: options.secure_cookie,
        wallet,
    };
    // The API's actions share one CSRF check (inside the token check below, which runs first).
    let api_actions = Router::new()
        .route("/api/batches/{id}/approve", post(api::approve))
        .route("/api/batches/{id}/cancel", post(api::cancel))
        .route("/api/batches/{id}/rerun", post(api::rerun))
        .route("/api/items/{id}/retry-flow", post(api::retry_flow))
        .route("/api/batches/{id}/pause", post(api::pause))
        .route("/api/batches/{id}/resume", post(api::resume))
        .route("/api/pause-all", post(api::pause_all))
        .route("/api/resume-all", post(api::resume_all))
        .route_layer(axum::middleware::from_fn_with_state(
            dash.clone(),
            api::require_csrf,
        ));
    let guarded = Router::new()
        .route("/", get(html::index))
        .route("/batches/{id}", get(html::batch_page))
        .route("/items/{id}", get(html::item_page))
        .route("/batches/{id}/approve", post(actions::approve))
        .route("/batches/{id}/cancel", post(actions::cancel))
        .route("/batches/{id}/rerun", post(actions::rerun))
        .route("/items/{id}/retry-flow", post(actions::retry_flow))
        .route("/batches/{id}/pause", post(actions::pause))
        .route("/batches/{id}/resume", post(actions::resume))
        .route("/pause-all", post(actions::pause_all))
        .route("/resume-all", post(actions::resume_all))
        .route("/api/batches", get(api::batches))
        .route("/api/batches/{id}", get(api::batch))
        .route("/api/items/{id}", get(api::item))
        .merge(api_actions)
        .route_layer(axum::middleware::from_fn_with_state(
            dash.clone(),
            require_token,
        ));
    Router::new()
        .route("/login", get(html::login))
        .merge(guarded)
        .with_state(dash)
}

/// What a request presents: the bearer header's token first, else the session cookie.
fn presented_token(headers: &HeaderMap) -> Option<(AuthVia, String)> {
    if let Some(v) = headers.get(header::AUTHORIZATION)
        && let Ok(v) = v.to_str()
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some((AuthVia::Bearer, t.trim().to_string()));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| (AuthVia::Cookie, value.to_string()))
}

async fn require_token(State(dash): State<Dash>, mut req: Request, next: Next) -> Response {
    let passes = |via, value: &str| match via {
        AuthVia::Bearer => dash.auth.token_ok(value),
        AuthVia::Cookie => dash.auth.session_ok(value),
    };
    match presented_token(req.headers()) {
        Some((via, value)) if passes(via, &value) => {
            req.extensions_mut().insert(via);
            next.run(req).await
        }
        _ => unauthorized(),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer realm=\"payrun\""),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "401 unauthorized: send `Authorization: Bearer <token>`, or open /login?token=<token> once\n",
    )
        .into_response()
}

/// Whether a POST may act: a bearer header suffices; a cookie needs the CSRF value too.
fn csrf_passes(dash: &Dash, via: AuthVia, presented: Option<&str>) -> bool {
    match via {
        AuthVia::Bearer => true,
        AuthVia::Cookie => presented.is_some_and(|c| dash.auth.csrf_ok(c)),
    }
}

fn forbidden_csrf() -> Response {
    (
        StatusCode::FORBIDDEN,
        "403: missing or wrong CSRF value; reload the page and try again\n",
    )
        .into_response()
}

/// A failed request, as the API (JSON) or a page (HTML) shows it.
#[derive(Debug)]
enum DashError {
    NotFound(String),
    BadInput(String),
    Internal(String),
}

impl DashError {
    fn status(&self) -> StatusCode {
        match self {
            DashError::NotFound(_) => StatusCode::NOT_FOUND,
            DashError::BadInput(_) => StatusCode::BAD_REQUEST,
            DashError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> &str {
        match self {
            DashError::NotFound(m) | DashError::BadInput(m) | DashError::Internal(m) => m,
        }
    }
}

impl From<StoreError> for DashError {
    fn from(e: StoreError) -> DashError {
        tracing::error!(error = %e, "dashboard: store error");
        DashError::Internal("the store failed; see the server log".into())
    }
}

impl From<OpsError> for DashError {
    fn from(e: OpsError) -> DashError {
        match e {
            OpsError::NoBatch(_) | OpsError::NoItem(_) => DashError::NotFound(e.to_string()),
            OpsError::Store(e) => e.into(),
            OpsError::Feed(e) => {
                tracing::error!(error = %e, "dashboard: queue error");
                DashError::Internal(format!("{e}; the worker's feeder will pick the items up"))
            }
        }
    }
}

fn parse_id<T: std::str::FromStr>(what: &str, raw: &str) -> Result<T, DashError> {
    raw.trim()
        .parse()
        .map_err(|_| DashError::NotFound(format!("no {what} {raw:?}")))
}

/// An item as the dashboard lists it (the API's batch view, and each row of the batch page).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemSummary {
    pub id: String,
    pub payee_id: String,
    pub amount_cents: i64,
    pub amount: String,
    pub state: String,
    pub dots_user_id: Option<String>,
    pub transfer_id: Option<String>,
    pub flow_link: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
    /// Still awaiting payout after its last reminder (`[reminders]`).
    pub unclaimed: bool,
    /// Reminders sent with a fresh link.
    pub reminders: i64,
}

impl From<ItemRecord> for ItemSummary {
    fn from(i: ItemRecord) -> ItemSummary {
        ItemSummary {
            flow_link: i.payout_link.or(i.onboarding_link),
            amount: crate::money::format_cents(i.amount.get()),
            id: i.id.to_string(),
            payee_id: i.payee_id,
            amount_cents: i.amount.get(),
            state: i.state.to_string(),
            dots_user_id: i.dots_user_id.map(|u| u.to_string()),
            transfer_id: i.transfer_id.map(|t| t.to_string()),
            attempts: i.transfer_attempts,
            last_error: i.last_error,
            updated_at: i.updated_at,
            unclaimed: i.unclaimed_at.is_some()
                && i.state == crate::item::ItemState::AwaitingPayout,
            reminders: i.reminders,
        }
    }
}

/// A batch's items, optionally only those in `state` (which must name an `ItemState`).
async fn items_in(
    store: &Store,
    batch: crate::batch::BatchId,
    state: Option<&str>,
) -> Result<Vec<ItemSummary>, DashError> {
    let state = match state.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<crate::item::ItemState>()
                .map_err(|_| DashError::BadInput(format!("no item state {s:?}")))?,
        ),
    };
    Ok(store
        .batch_items(batch)
        .await?
        .into_iter()
        .filter(|i| state.is_none_or(|s| i.state == s))
        .map(ItemSummary::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_wins_over_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; payrun_token=fromcookie".parse().unwrap(),
        );
        assert_eq!(
            presented_token(&h),
            Some((AuthVia::Cookie, "fromcookie".into()))
        );
        h.insert(header::AUTHORIZATION, "Bearer frombearer".parse().unwrap());
        assert_eq!(
            presented_token(&h),
            Some((AuthVia::Bearer, "frombearer".into()))
        );
    }
}
