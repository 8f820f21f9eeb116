//! HTTP plumbing: the router, the gate every API request passes (count, auth, faults, latency,
//! post-commit stall/drop), error responses, and the unauthenticated `/_sim/...` test hooks.
//!
//! Guarantees: gate order is count → auth (401) → rate limit → injected fault → random throttle →
//! random 5xx → latency → handler → stall/drop. A 401, 429 or 5xx from the gate never reaches a
//! handler, so it changes no state. A dropped response keeps the handler's status and headers,
//! sends part of the body, then breaks the connection.

use super::Sim;
use super::config::Fault;
use super::validate::{ApiError, json_object};
use super::{handlers, wire};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// The largest `POST /v2/transfer-batches` body accepted: 5,000 items with room for metadata
/// (other routes keep axum's 2 MB).
const BATCH_BODY_LIMIT: usize = 16 << 20;

pub fn router(sim: Sim) -> Router {
    let api = Router::new()
        .route(
            "/v2/users",
            post(handlers::create_user).get(handlers::list_users),
        )
        .route(
            "/v2/users/{id}",
            get(handlers::get_user).patch(handlers::update_user),
        )
        .route(
            "/v2/flows",
            post(handlers::create_flow).get(handlers::list_flows),
        )
        .route("/v2/flows/{id}", get(handlers::get_flow))
        .route(
            "/v2/transfers",
            post(handlers::create_transfer).get(handlers::list_transfers),
        )
        .route("/v2/transfers/{id}", get(handlers::get_transfer))
        .route(
            "/v2/transfer-batches",
            post(handlers::create_transfer_batch)
                .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT))
                .get(handlers::list_transfer_batches),
        )
        .route(
            "/v2/transfer-batches/{id}",
            get(handlers::get_transfer_batch),
        )
        .route("/v2/apps/{app_id}", get(handlers::get_app))
        .route_layer(middleware::from_fn_with_state(sim.clone(), gate))
        .fallback(|| async { ApiError::new(404, "not-found", "no such API route") });
    let hooks = Router::new()
        .route("/ledger", get(ledger))
        .route("/clock/advance", post(advance_clock))
        .route("/fund", post(fund))
        .route("/flows/{id}/complete", post(complete_flow));
    Router::new()
        .nest("/api", api)
        .nest("/_sim", hooks)
        .with_state(sim)
}

/// The endpoint key of a request: method plus route template without `/api`.
fn endpoint(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let path = path.strip_prefix("/api").unwrap_or(&path);
    format!("{} {}", req.method(), path)
}

fn authorized(sim: &Sim, req: &Request) -> bool {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let cfg = sim.config();
    decoded == format!("{}:{}", cfg.client_id, cfg.api_key.expose()).as_bytes()
}

fn throttled(sim: &Sim) -> Response {
    let mut resp = ApiError::new(429, "rate-limited", "too many requests").into_response();
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(sim.config().retry_after_secs),
    );
    resp
}

async fn gate(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let endpoint = endpoint(&req);
    sim.inner.faults.count(&endpoint);
    if !authorized(&sim, &req) {
        return ApiError::new(401, "unauthorized", "missing or wrong Basic credentials")
            .into_response();
    }
    let post = match sim.inner.faults.plan(sim.config(), &endpoint) {
        super::faults::Plan::Throttle => return throttled(&sim),
        super::faults::Plan::Status(code) => {
            let code_str = if code == 500 {
                "internal-server-error"
            } else {
                "service-unavailable"
            };
            return ApiError::new(code, code_str, "simulated server error").into_response();
        }
        super::faults::Plan::Run { post } => post,
    };
    if sim.config().latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sim.config().latency_ms)).await;
    }
    let resp = next.run(req).await;
    match post {
        None => resp,
        Some(Fault::Stall(d)) => {
            tokio::time::sleep(d).await;
            resp
        }
        Some(Fault::Drop) => drop_body(resp).await,
        // Throttle and Status never come back as post-handler faults.
        Some(_) => resp,
    }
}

/// Keep status and headers, send the first half of the body, then fail the stream so the
/// connection breaks mid-response.
async fn drop_body(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    // Pause after the partial body so hyper flushes the head and the first bytes to the client
    // before the stream fails and the connection is cut.
    let first = futures::stream::iter([Ok::<Bytes, std::io::Error>(half)]);
    let cut = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::other("simulated dropped response"))
    });
    Response::from_parts(parts, Body::from_stream(first.chain(cut)))
}

async fn ledger(State(sim): State<Sim>) -> Response {
    axum::Json(sim.ledger()).into_response()
}

async fn advance_clock(State(sim): State<Sim>, body: Bytes) -> Result<Response, ApiError> {
    let obj = json_object(&body)?;
    let secs = obj
        .get("secs")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| ApiError::invalid("secs must be a non-negative number"))?;
    sim.clock().advance(Duration::from_secs_f64(secs));
    Ok(axum::Json(wire::clock_json(sim.clock().now())).into_response())
}

/// `POST /_sim/fund {"cents": N}`: adds N cents (a whole number, may be negative to drain it)
/// to the App wallet.
async fn fund(State(sim): State<Sim>, body: Bytes) -> Result<Response, ApiError> {
    let obj = json_object(&body)?;
    let cents = obj
        .get("cents")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::invalid("cents must be a whole number"))?;
    Ok(axum::Json(wire::fund_json(sim.fund(cents))).into_response())
}

async fn complete_flow(
    State(sim): State<Sim>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let flow = Uuid::parse_str(&id)
        .ok()
        .and_then(|id| sim.complete_flow(id))
        .ok_or_else(|| ApiError::new(404, "no-such-flow", format!("no flow {id}")))?;
    Ok(axum::Json(wire::flow_json(&flow)).into_response())
}
