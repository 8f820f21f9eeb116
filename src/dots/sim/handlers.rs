//! Handlers of the simulated `/api/v2/...` endpoints (users, flows, transfers, transfer
//! batches, the App).
//!
//! Guarantees: objects are rendered by `wire` (the spec's schemas); errors are
//! `{"message", "error_code"}` with a 4xx status.

use super::Sim;
use super::paging::{PageQuery, paginate};
use super::state::TransferOutcome;
use super::validate::{self, ApiError};
use super::wire::{app_json, flow_json, page_json, transfer_batch_json, transfer_json, user_json};
use crate::dots::types::{Page, Transfer, parse_time};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use uuid::Uuid;

type Params = Query<HashMap<String, String>>;

fn parse_id(raw: &str, code: &'static str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::new(404, code, format!("no {what} {raw}")))
}

pub async fn create_user(State(sim): State<Sim>, body: Bytes) -> Result<Response, ApiError> {
    let req = validate::user_request(&body)?;
    let user = sim.lock().create_user(req);
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

pub async fn get_user(
    State(sim): State<Sim>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let uid = parse_id(&id, "no-such-user", "user")?;
    let user = sim
        .lock()
        .user(uid)
        .ok_or_else(|| ApiError::new(404, "no-such-user", format!("no user {id}")))?;
    Ok(Json(user_json(&user)).into_response())
}

/// `PATCH /v2/users/{id}`: `default_payout_method` (a rail) and `auto_payout_enabled`.
pub async fn update_user(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let uid = parse_id(&id, "no-such-user", "user")?;
    let (method, auto) = validate::user_update(&body)?;
    let user = sim
        .lock()
        .update_payout_settings(uid, method, auto)
        .ok_or_else(|| ApiError::new(404, "no-such-user", format!("no user {id}")))?;
    Ok(Json(user_json(&user)).into_response())
}

/// `GET /v2/users`: newest first, optional `status` filter.
pub async fn list_users(State(sim): State<Sim>, Query(q): Params) -> Result<Response, ApiError> {
    let pq = PageQuery::parse(&q)?;
    let status = q.get("status").cloned();
    let mut users = sim.lock().users();
    users.reverse();
    let page = paginate(
        users,
        |u| u.id,
        |u| status.is_none() || u.status == status,
        &pq,
    )?;
    Ok(Json(page_json(page, user_json)).into_response())
}

pub async fn create_flow(State(sim): State<Sim>, body: Bytes) -> Result<Response, ApiError> {
    let req = validate::flow_request(&body)?;
    let now = sim.clock().now();
    let flow = sim.lock().create_flow(req, sim.host(), now)?;
    Ok(Json(flow_json(&flow)).into_response())
}

pub async fn get_flow(
    State(sim): State<Sim>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let fid = parse_id(&id, "no-such-flow", "flow")?;
    let now = sim.clock().now();
    let flow = sim
        .lock()
        .flow(fid, sim.config(), now)
        .ok_or_else(|| ApiError::new(404, "no-such-flow", format!("no flow {id}")))?;
    Ok(Json(flow_json(&flow)).into_response())
}

/// `GET /v2/flows`: newest first.
pub async fn list_flows(State(sim): State<Sim>, Query(q): Params) -> Result<Response, ApiError> {
    let pq = PageQuery::parse(&q)?;
    let now = sim.clock().now();
    let flows = sim.lock().flows(sim.config(), now);
    let page = paginate(flows, |f| f.id, |_| true, &pq)?;
    Ok(Json(page_json(page, flow_json)).into_response())
}

pub async fn create_transfer(State(sim): State<Sim>, body: Bytes) -> Result<Response, ApiError> {
    let req = validate::transfer_request(&body)?;
    let now = sim.clock().now();
    let outcome = sim.lock().create_transfer(req, sim.config(), now)?;
    let (TransferOutcome::Created(t) | TransferOutcome::Replayed(t)) = outcome;
    Ok(Json(transfer_json(&t, sim.config().amounts_as_strings)).into_response())
}

pub async fn get_transfer(
    State(sim): State<Sim>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tid = parse_id(&id, "no-such-transfer", "transfer")?;
    let t = sim
        .settled()
        .transfer(tid)
        .ok_or_else(|| ApiError::new(404, "no-such-transfer", format!("no transfer {id}")))?;
    Ok(Json(transfer_json(&t, sim.config().amounts_as_strings)).into_response())
}

/// `GET /v2/transfers`: newest first unless `reverse_order=true`; filters `user_id`, `status`,
/// `type`, `start_date`, `end_date` (inclusive).
pub async fn list_transfers(
    State(sim): State<Sim>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let pq = PageQuery::parse(&q)?;
    let oldest_first = match q.get("reverse_order").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("reverse_order must be true or false")),
    };
    let user_id = q
        .get("user_id")
        .map(|s| Uuid::parse_str(s))
        .transpose()
        .map_err(|_| ApiError::invalid("user_id must be a UUID"))?;
    let date = |name: &str| {
        q.get(name)
            .map(|s| parse_time(s))
            .transpose()
            .map_err(|_| ApiError::invalid(format!("{name} must be a date-time")))
    };
    let (start, end) = (date("start_date")?, date("end_date")?);
    let status = q.get("status");
    let kind = q.get("type");
    let transfers = sim.settled().transfers(oldest_first);
    let keep = |t: &Transfer| {
        user_id.is_none_or(|u| t.user_id == u)
            && status.is_none_or(|s| &t.status == s)
            && kind.is_none_or(|k| t.kind.as_ref() == Some(k))
            && start.is_none_or(|s| t.created >= s)
            && end.is_none_or(|e| t.created <= e)
    };
    let page = paginate(transfers, |t| t.id, keep, &pq)?;
    let as_string = sim.config().amounts_as_strings;
    Ok(Json(page_json(page, |t| transfer_json(t, as_string))).into_response())
}

/// `POST /v2/transfer-batches`: every item applied as a single transfer would be (see
/// `state/batches.rs`); `200` with the batch, items in request order.
pub async fn create_transfer_batch(
    State(sim): State<Sim>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = validate::transfer_batch_request(&body)?;
    let now = sim.clock().now();
    let batch = {
        let mut st = sim.settled();
        st.create_transfer_batch(req, sim.config(), now)?
    };
    Ok(Json(transfer_batch_json(&batch, sim.config().amounts_as_strings)).into_response())
}

pub async fn get_transfer_batch(
    State(sim): State<Sim>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let no_such = || {
        ApiError::new(
            404,
            "no-such-transfer-batch",
            format!("no transfer batch {id}"),
        )
    };
    let bid = Uuid::parse_str(&id).map_err(|_| no_such())?;
    let batch = sim.settled().transfer_batch(bid).ok_or_else(no_such)?;
    Ok(Json(transfer_batch_json(&batch, sim.config().amounts_as_strings)).into_response())
}

/// `GET /v2/transfer-batches`: newest first. Only the page's batches are copied out.
pub async fn list_transfer_batches(
    State(sim): State<Sim>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let pq = PageQuery::parse(&q)?;
    let page = {
        let st = sim.settled();
        let ids = paginate(st.transfer_batch_ids(), |id| *id, |_| true, &pq)?;
        Page {
            data: ids
                .data
                .iter()
                .filter_map(|id| st.transfer_batch(*id))
                .collect(),
            has_more: ids.has_more,
        }
    };
    let as_string = sim.config().amounts_as_strings;
    Ok(Json(page_json(page, |b| transfer_batch_json(b, as_string))).into_response())
}

/// `GET /v2/apps/{app_id}`: the simulated App, or 404 for any other id.
pub async fn get_app(State(sim): State<Sim>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let app_id = sim.config().app_id;
    if Uuid::parse_str(&id).ok() != Some(app_id) {
        return Err(ApiError::new(404, "no-such-app", format!("no app {id}")));
    }
    let figures = sim.lock().app_metrics();
    Ok(Json(app_json(app_id, figures)).into_response())
}
