//! The JSON API: the same views and actions as the pages, for scripts. Actions answer 200 with
//! what `ops` did and skipped (an item left alone is not an error); 404 for an unknown batch
//! or item, 400 for malformed input, 403 for a cookie-authenticated POST without CSRF value.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    AuthVia, CSRF_HEADER, Dash, DashError, ItemSummary, csrf_passes, forbidden_csrf, items_in,
    parse_id,
};
use crate::app::control::{self, ControlOutcome, Target};
use crate::app::{BatchStatus, ops};
use crate::batch::{BatchId, ItemId};

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.message() }))).into_response()
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<i64>,
}

pub(super) async fn batches(
    State(d): State<Dash>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<BatchStatus>>, DashError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(crate::app::list_status(&d.store, limit).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct StateQuery {
    state: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchView {
    status: BatchStatus,
    items: Vec<ItemSummary>,
}

pub(super) async fn batch(
    State(d): State<Dash>,
    Path(id): Path<String>,
    Query(q): Query<StateQuery>,
) -> Result<Response, DashError> {
    let batch: BatchId = parse_id("batch", &id)?;
    let Some(status) = crate::app::batch_status(&d.store, batch).await? else {
        return Err(DashError::NotFound(format!("no batch {batch}")));
    };
    let items = items_in(&d.store, batch, q.state.as_deref()).await?;
    Ok(Json(BatchView { status, items }).into_response())
}

pub(super) async fn item(
    State(d): State<Dash>,
    Path(id): Path<String>,
) -> Result<Json<ops::ItemView>, DashError> {
    let item: ItemId = parse_id("item", &id)?;
    Ok(Json(ops::show(&d.store, item).await?))
}

/// The optional body of batch actions: `{"item": "<item id>"}` limits them to one item.
#[derive(Debug, Default, Deserialize)]
struct ActionBody {
    item: Option<String>,
}

fn action_item(body: &Bytes) -> Result<Option<ItemId>, DashError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let b: ActionBody = serde_json::from_slice(body)
        .map_err(|e| DashError::BadInput(format!("body: {e}; expected {{\"item\": \"…\"}}")))?;
    b.item
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| DashError::BadInput(format!("no item {s:?}")))
        })
        .transpose()
}

/// The API's POST routes pass here first (a route layer): a bearer header suffices; a cookie
/// needs the CSRF header too.
pub(super) async fn require_csrf(
    State(d): State<Dash>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let via = req.extensions().get::<AuthVia>().copied();
    let presented = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match via {
        Some(via) if csrf_passes(&d, via, presented) => next.run(req).await,
        _ => forbidden_csrf(),
    }
}

pub(super) async fn approve(
    State(d): State<Dash>,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let batch: BatchId = parse_id("batch", &id)?;
    let mut q = d.queue.clone();
    let approved = ops::approve(&d.store, &mut q, batch).await?;
    Ok(Json(json!({ "approved": approved })).into_response())
}

pub(super) async fn cancel(
    State(d): State<Dash>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DashError> {
    let batch: BatchId = parse_id("batch", &id)?;
    let item = action_item(&body)?;
    Ok(Json(ops::cancel(&d.store, batch, item).await?).into_response())
}

pub(super) async fn rerun(
    State(d): State<Dash>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, DashError> {
    let batch: BatchId = parse_id("batch", &id)?;
    let item = action_item(&body)?;
    let mut q = d.queue.clone();
    Ok(Json(ops::rerun(&d.store, &mut q, batch, item).await?).into_response())
}

pub(super) async fn retry_flow(
    State(d): State<Dash>,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let item: ItemId = parse_id("item", &id)?;
    let mut q = d.queue.clone();
    let body = match ops::retry_flow(&d.store, &mut q, item).await? {
        Ok(was) => json!({ "renewed": true, "was": was.as_str() }),
        Err(why) => json!({ "renewed": false, "reason": why }),
    };
    Ok(Json(body).into_response())
}

pub(super) async fn pause(
    State(d): State<Dash>,
    Path(id): Path<String>,
) -> Result<Json<ControlOutcome>, DashError> {
    let batch: BatchId = parse_id("batch", &id)?;
    Ok(Json(control::pause(&d.store, Target::Batch(batch)).await?))
}

pub(super) async fn resume(
    State(d): State<Dash>,
    Path(id): Path<String>,
) -> Result<Json<ControlOutcome>, DashError> {
    let batch: BatchId = parse_id("batch", &id)?;
    let mut q = d.queue.clone();
    Ok(Json(
        control::resume(&d.store, &mut q, Target::Batch(batch)).await?,
    ))
}

pub(super) async fn pause_all(State(d): State<Dash>) -> Result<Json<ControlOutcome>, DashError> {
    Ok(Json(control::pause(&d.store, Target::All).await?))
}

pub(super) async fn resume_all(State(d): State<Dash>) -> Result<Json<ControlOutcome>, DashError> {
    let mut q = d.queue.clone();
    Ok(Json(control::resume(&d.store, &mut q, Target::All).await?))
}
