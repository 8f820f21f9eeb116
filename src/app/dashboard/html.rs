//! The pages' handlers: batches (`/`), one batch's items (`/batches/{id}?state=`), one item
//! with its history (`/items/{id}`) and `/login`. Each reads through the store and `ops`, then
//! renders a template from `pages`. No script: the buttons are forms posting to the routes in
//! `actions`, which redirect back here with a flash message.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::{COOKIE, Dash, DashError, items_in, pages};
use crate::app::ops;
use crate::app::{batch_status, list_status};
use crate::batch::{BatchId, ItemId};

pub(super) fn error_page(e: DashError) -> Response {
    pages::error(&e)
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    token: Option<String>,
}

/// `GET /login?token=`: checks the token, stores the session value derived from it (never the
/// token) in an HttpOnly, SameSite=Strict cookie — `Secure` unless configured off — and sends
/// the browser to `/`.
pub(super) async fn login(State(d): State<Dash>, Query(q): Query<LoginQuery>) -> Response {
    if !q.token.is_some_and(|t| d.auth.token_ok(&t)) {
        return super::unauthorized();
    }
    let secure = if d.secure_cookie { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!(
                    "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
                    d.auth.session
                ),
            ),
            (header::LOCATION, "/".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PageQuery {
    msg: Option<String>,
    state: Option<String>,
}

/// `GET /`: every batch, newest first, with progress, counts per state and totals.
pub(super) async fn index(State(d): State<Dash>, Query(q): Query<PageQuery>) -> Response {
    let shown = async || {
        let batches = list_status(&d.store, 200).await?;
        let backlog = d.store.endpoint_backlog().await?;
        Ok::<_, crate::store::StoreError>((batches, backlog))
    };
    match shown().await {
        Ok((batches, backlog)) => pages::page(
            StatusCode::OK,
            "batches",
            q.msg.as_deref(),
            html! {
                (pages::batches(&d.auth.csrf, &batches))
                (pages::backlog(&backlog))
            },
        ),
        Err(e) => error_page(e.into()),
    }
}

/// `GET /batches/{id}?state=`: the batch, its actions, and its items (optionally one state).
pub(super) async fn batch_page(
    State(d): State<Dash>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let shown = async || {
        let batch: BatchId = super::parse_id("batch", &id)?;
        let Some(mut b) = batch_status(&d.store, batch).await? else {
            return Err(DashError::NotFound(format!("no batch {batch}")));
        };
        if let Some(w) = &d.wallet {
            b.wallet = w.view(&d.store, Some(batch), 0).await?;
        }
        let filter = q.state.as_deref().unwrap_or("");
        let items = items_in(&d.store, batch, Some(filter)).await?;
        let body = pages::batch(&d.auth.csrf, batch, &b, filter, &items);
        Ok((format!("batch {batch}"), body))
    };
    match shown().await {
        Ok((title, body)) => pages::page(StatusCode::OK, &title, q.msg.as_deref(), body),
        Err(e) => error_page(e),
    }
}

/// `GET /items/{id}`: the item and its event history (`ops::show`).
pub(super) async fn item_page(
    State(d): State<Dash>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let item: ItemId = match super::parse_id("item", &id) {
        Ok(i) => i,
        Err(e) => return error_page(e),
    };
    match ops::show(&d.store, item).await {
        Ok(v) => pages::page(
            StatusCode::OK,
            &format!("item {}", v.payee_id),
            q.msg.as_deref(),
            pages::item(&d.auth.csrf, &v),
        ),
        Err(e) => error_page(e.into()),
    }
}
