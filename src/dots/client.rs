//! The HTTP client for the Dots v2 API (reqwest + rustls).
//!
//! Owns: authentication (HTTP Basic from client id + API key), base URL, timeouts, and the
//! classification of every failure into [`ErrorClass`]:
//! - *permanent*: Dots understood and refused (4xx such as invalid input, unknown user,
//!   insufficient funds). Retrying cannot help.
//! - *retryable*: nothing happened at Dots (429, 5xx, could not connect). Retry later, honouring
//!   `Retry-After`.
//! - *ambiguous*: the request was sent and the answer was lost (timeout, dropped connection,
//!   unreadable body). For a transfer the money may have moved: retry only with the same
//!   idempotency key, or reconcile.
//! - *duplicate key*: Dots refused an idempotency key it has already seen. The earlier request
//!   may have succeeded: reconcile before anything else.
//!
//! Apart from its class, a failure may be *systemic* ([`DotsError::systemic`]): not the item's
//! fault but Dots' or ours as a whole — credentials refused (401/403), App out of funds,
//! Dots unavailable (connect errors, timeouts, 5xx), or throttling us (429). Every call's
//! outcome goes to the [`CallObserver`] the owner installed (the jobs' circuits), so the
//! client decides what a failure *is* and the observer what to do about it.
//!
//! It knows nothing of the store or the jobs; callers attach batch/item ids to the span.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;
use uuid::Uuid;

use super::limiter::RateLimiter;
use super::retry::ReadRetry;
pub use super::systemic::{CallObserver, Systemic};
use super::types::*;
use crate::config::{DotsSettings, WorkerSettings};
use crate::secret::Secret;

/// How a failed call should be treated by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Permanent,
    Retryable,
    Ambiguous,
    DuplicateKey,
}

#[derive(Debug, thiserror::Error)]
pub enum DotsError {
    #[error("Dots refused the request: HTTP {status}{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Permanent {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("Dots is unavailable: {message}")]
    Retryable {
        status: Option<u16>,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("outcome unknown (the request was sent, the answer was lost): {0}")]
    Ambiguous(String),
    #[error("Dots rejected a reused idempotency key: {0}")]
    DuplicateKey(String),
}

impl DotsError {
    pub fn class(&self) -> ErrorClass {
        match self {
            DotsError::Permanent { .. } => ErrorClass::Permanent,
            DotsError::Retryable { .. } => ErrorClass::Retryable,
            DotsError::Ambiguous(_) => ErrorClass::Ambiguous,
            DotsError::DuplicateKey(_) => ErrorClass::DuplicateKey,
        }
    }

    /// The delay Dots asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DotsError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Dots refused a transfer because the paying wallet (for a payout, the App's) is short:
    /// `transaction-insufficient-funds`. A definite refusal: nothing moved.
    pub fn is_insufficient_funds(&self) -> bool {
        match self {
            DotsError::Permanent { code, message, .. } => {
                let says = |s: &str| {
                    let s = s.to_ascii_lowercase();
                    s.contains("insufficient-funds") || s.contains("insufficient funds")
                };
                code.as_deref().is_some_and(says) || says(message)
            }
            _ => false,
        }
    }

    /// A 404: the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DotsError::Permanent { status: 404, .. })
    }
}

/// What [`DotsClient::find_flow`] found.
#[derive(Debug, Clone)]
pub enum FlowSearch {
    Found(Flow),
    /// Every flow back to the time bound was looked at: none matches.
    NotFound,
    /// The page bound was reached before the time bound (a busy App): not known.
    TooMany {
        pages: usize,
    },
}

/// Where and as whom to call Dots. `Debug` shows the API key as `***` ([`Secret`]).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://pls.senddotssandbox.com/api` (paths `/v2/...` are appended).
    pub base_url: String,
    pub client_id: String,
    pub api_key: Secret,
    /// Whole-request timeout; past it the outcome is ambiguous.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Client-side limit, requests per second over every call of this process (0: none).
    pub rate_limit_rps: f64,
    /// How read-only callers retry (`DotsClient::read_retrying`, in `dots::retry`).
    pub read_retry: ReadRetry,
}

impl ClientConfig {
    /// The client's settings from the configuration (`[dots]`, and `[worker]` for how reads
    /// are retried): how every command, the demo, the bench and the tests wire a client.
    pub fn from_settings(dots: &DotsSettings, worker: &WorkerSettings) -> ClientConfig {
        ClientConfig {
            base_url: dots.base_url.clone(),
            client_id: dots.client_id.clone(),
            api_key: dots.api_key.clone(),
            timeout: Duration::from_secs(dots.timeout_secs),
            connect_timeout: Duration::from_secs(dots.connect_timeout_secs),
            rate_limit_rps: dots.rate_limit_rps,
            read_retry: ReadRetry::from(worker),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DotsClient {
    http: reqwest::Client,
    config: ClientConfig,
    limiter: Option<RateLimiter>,
    observer: Option<std::sync::Arc<dyn CallObserver>>,
}

impl DotsClient {
    pub fn new(config: ClientConfig) -> Result<DotsClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("payrun/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let limiter = (config.rate_limit_rps > 0.0).then(|| {
            RateLimiter::new(
                config.rate_limit_rps,
                (config.rate_limit_rps / 10.0).ceil() as u32,
            )
        });
        Ok(DotsClient {
            http,
            config,
            limiter,
            observer: None,
        })
    }

    /// This client (a clone sharing its connections and rate limiter) reporting every call's
    /// outcome to `observer`.
    pub fn observed_by(&self, observer: std::sync::Arc<dyn CallObserver>) -> DotsClient {
        DotsClient {
            observer: Some(observer),
            ..self.clone()
        }
    }

    /// A cheap documented read (`GET /v2/flows?limit=1`): whether Dots answers and accepts
    /// our credentials. The circuits' half-open probe.
    #[instrument(skip(self), err(Display, level = "debug"))]
    pub async fn probe(&self) -> Result<(), DotsError> {
        let q = [("limit", "1".to_string())];
        self.call::<(), Page<Flow>>("GET /v2/flows", Method::GET, "/v2/flows", &q, None)
            .await
            .map(|_| ())
    }

    pub fn base_url(&self) -> &str {
        &self.config.base_url
    }

    /// How read-only callers retry a failed read.
    pub fn read_retry(&self) -> &ReadRetry {
        &self.config.read_retry
    }

    /// The whole-request timeout: the longest one call can take (connecting included).
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    #[instrument(skip(self, req), fields(user_id = ?req.user_id), err(Display, level = "info"))]
    pub async fn create_flow(&self, req: &CreateFlow) -> Result<Flow, DotsError> {
        self.call("POST /v2/flows", Method::POST, "/v2/flows", &[], Some(req))
            .await
    }

    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn get_flow(&self, id: Uuid) -> Result<Flow, DotsError> {
        self.call::<(), _>(
            "GET /v2/flows/{id}",
            Method::GET,
            &format!("/v2/flows/{id}"),
            &[],
            None,
        )
        .await
    }

    /// One page of the App's flows, newest first.
    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn list_flows_page(
        &self,
        starting_after: Option<Uuid>,
    ) -> Result<Page<Flow>, DotsError> {
        let mut q = vec![("limit", "100".to_string())];
        if let Some(c) = starting_after {
            q.push(("starting_after", c.to_string()));
        }
        self.call::<(), _>("GET /v2/flows", Method::GET, "/v2/flows", &q, None)
            .await
    }

    /// The newest flow whose metadata has `key` = `value`, looking only at flows created at or
    /// after `not_before` and at most `max_pages` pages of 100 (the list is newest first and
    /// has no filter in the v2 API — `GET /v2/flows` takes only `limit` and cursors — so the
    /// scan stops at `not_before` or at the page bound, whichever comes first).
    pub async fn find_flow(
        &self,
        key: &str,
        value: &str,
        not_before: chrono::DateTime<chrono::Utc>,
        max_pages: usize,
    ) -> Result<FlowSearch, DotsError> {
        let mut cursor = None;
        for _ in 0..max_pages.max(1) {
            let page = self.list_flows_page(cursor).await?;
            for f in &page.data {
                if f.metadata
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .and_then(|v| v.as_str())
                    == Some(value)
                {
                    return Ok(FlowSearch::Found(f.clone()));
                }
            }
            match page.data.last() {
                Some(last) if page.has_more && last.created >= not_before => cursor = Some(last.id),
                _ => return Ok(FlowSearch::NotFound),
            }
        }
        Ok(FlowSearch::TooMany { pages: max_pages })
    }

    #[instrument(skip(self, req), fields(user_id = %req.user_id, amount = req.amount, key = ?req.idempotency_key), err(Display, level = "info"))]
    pub async fn create_transfer(&self, req: &CreateTransfer) -> Result<Transfer, DotsError> {
        self.call(
            "POST /v2/transfers",
            Method::POST,
            "/v2/transfers",
            &[],
            Some(req),
        )
        .await
    }

    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn get_transfer(&self, id: Uuid) -> Result<Transfer, DotsError> {
        self.call::<(), _>(
            "GET /v2/transfers/{id}",
            Method::GET,
            &format!("/v2/transfers/{id}"),
            &[],
            None,
        )
        .await
    }

    /// `POST /v2/transfer-batches`: many transfers in one call. The call as a whole fails or
    /// succeeds like [`Self::create_transfer`] (an ambiguous failure means any of its transfers
    /// may exist); a success may still carry per-item `error`s, each item's own outcome.
    #[instrument(skip(self, req), fields(items = req.items.len(), key = ?req.idempotency_key), err(Display, level = "info"))]
    pub async fn create_transfer_batch(
        &self,
        req: &CreateTransferBatch,
    ) -> Result<TransferBatch, DotsError> {
        self.call(
            "POST /v2/transfer-batches",
            Method::POST,
            "/v2/transfer-batches",
            &[],
            Some(req),
        )
        .await
    }

    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn get_transfer_batch(&self, id: Uuid) -> Result<TransferBatch, DotsError> {
        self.call::<(), _>(
            "GET /v2/transfer-batches/{id}",
            Method::GET,
            &format!("/v2/transfer-batches/{id}"),
            &[],
            None,
        )
        .await
    }

    /// One page of the App's transfer batches, newest first.
    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn list_transfer_batches_page(
        &self,
        starting_after: Option<Uuid>,
    ) -> Result<Page<TransferBatch>, DotsError> {
        let mut q = vec![("limit", "100".to_string())];
        if let Some(c) = starting_after {
            q.push(("starting_after", c.to_string()));
        }
        self.call::<(), _>(
            "GET /v2/transfer-batches",
            Method::GET,
            "/v2/transfer-batches",
            &q,
            None,
        )
        .await
    }

    /// `GET /v2/users/{id}`: the user, with their default payout method and auto payout.
    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn get_user(&self, id: Uuid) -> Result<User, DotsError> {
        self.call::<(), _>(
            "GET /v2/users/{id}",
            Method::GET,
            &format!("/v2/users/{id}"),
            &[],
            None,
        )
        .await
    }

    /// One page of a user's transfers, newest first.
    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn list_transfers_page(
        &self,
        user_id: Uuid,
        starting_after: Option<Uuid>,
    ) -> Result<Page<Transfer>, DotsError> {
        let mut q = vec![("user_id", user_id.to_string()), ("limit", "100".into())];
        if let Some(c) = starting_after {
            q.push(("starting_after", c.to_string()));
        }
        self.call::<(), _>("GET /v2/transfers", Method::GET, "/v2/transfers", &q, None)
            .await
    }

    /// Every transfer of a user, following the cursor to the last page.
    pub async fn list_all_transfers(&self, user_id: Uuid) -> Result<Vec<Transfer>, DotsError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_transfers_page(user_id, cursor).await?;
            let last = page.data.last().map(|t| t.id);
            all.extend(page.data);
            match (page.has_more, last) {
                (true, Some(id)) => cursor = Some(id),
                _ => return Ok(all),
            }
        }
    }

    /// The App (its wallet balance is `metrics.wallet_balance`): a cheap read, the funds
    /// probe.
    #[instrument(skip(self), err(Display, level = "info"))]
    pub async fn get_app(&self, app_id: Uuid) -> Result<App, DotsError> {
        self.call::<(), _>(
            "GET /v2/apps/{app_id}",
            Method::GET,
            &format!("/v2/apps/{app_id}"),
            &[],
            None,
        )
        .await
    }

    #[instrument(skip(self, req), err(Display, level = "info"))]
    pub async fn create_user(&self, req: &CreateUser) -> Result<User, DotsError> {
        self.call("POST /v2/users", Method::POST, "/v2/users", &[], Some(req))
            .await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, DotsError> {
        let url = format!("{}{}", self.config.base_url.trim_end_matches('/'), path);
        let mut rb = self
            .http
            .request(method, &url)
            .basic_auth(&self.config.client_id, Some(self.config.api_key.expose()));
        if !query.is_empty() {
            rb = rb.query(query);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        if let Some(l) = &self.limiter {
            l.acquire().await;
        }
        let res = self.send(rb).await;
        let outcome = match &res {
            Ok(_) => "ok".to_string(),
            Err(DotsError::Permanent { status, .. }) => status.to_string(),
            Err(DotsError::Retryable {
                status: Some(s), ..
            }) => s.to_string(),
            Err(DotsError::Retryable { .. }) => "connect".to_string(),
            Err(DotsError::Ambiguous(_)) => "ambiguous".to_string(),
            Err(DotsError::DuplicateKey(_)) => "duplicate_key".to_string(),
        };
        crate::metrics::dots_request(endpoint, &outcome);
        if let Some(o) = &self.observer {
            o.observed(endpoint, res.as_ref().map(|_| ()));
        }
        res
    }

    async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T, DotsError> {
        let resp = rb.send().await.map_err(classify_send_error)?;
        let status = resp.status();
        let retry_after = parse_retry_after(resp.headers());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| DotsError::Ambiguous(format!("response body lost: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                // The call succeeded at Dots but we cannot read what it made.
                DotsError::Ambiguous(format!(
                    "undecodable {status} response: {e}: {}",
                    snippet(&bytes)
                ))
            });
        }
        Err(classify_status(status, retry_after, &bytes))
    }
}

fn classify_send_error(e: reqwest::Error) -> DotsError {
    if e.is_connect() {
        // Nothing reached Dots.
        DotsError::Retryable {
            status: None,
            retry_after: None,
            message: format!("cannot connect: {e}"),
        }
    } else if e.is_builder() {
        DotsError::Permanent {
            status: 0,
            code: None,
            message: format!("cannot build request: {e}"),
        }
    } else {
        // Timeout or a connection that broke after the request went out.
        DotsError::Ambiguous(format!("{e}"))
    }
}

pub(super) fn classify_status(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> DotsError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.error_code.clone();
    let message = parsed
        .message
        .clone()
        .unwrap_or_else(|| snippet(body).to_string());
    let mentions_key = |s: &str| s.to_ascii_lowercase().contains("idempotency");
    let s = status.as_u16();
    if (s == 409 || s == 400)
        && (code.as_deref().is_some_and(mentions_key) || mentions_key(&message))
    {
        return DotsError::DuplicateKey(message);
    }
    if s == 429 || s == 408 || s == 409 || status.is_server_error() {
        return DotsError::Retryable {
            status: Some(s),
            retry_after,
            message: format!("HTTP {s}: {message}"),
        };
    }
    DotsError::Permanent {
        status: s,
        code,
        message,
    }
}

fn parse_retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn snippet(b: &[u8]) -> &str {
    let s = std::str::from_utf8(b).unwrap_or("<binary>");
    &s[..s.floor_char_boundary(300.min(s.len()))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_for_the_caller() {
        let c = |s: u16, body: &str| {
            classify_status(StatusCode::from_u16(s).unwrap(), None, body.as_bytes()).class()
        };
        assert_eq!(
            c(400, r#"{"message":"bad","error_code":"invalid-input"}"#),
            ErrorClass::Permanent
        );
        assert_eq!(
            c(400, r#"{"error_code":"transaction-insufficient-funds"}"#),
            ErrorClass::Permanent
        );
        assert_eq!(c(404, "not found"), ErrorClass::Permanent);
        let funds = classify_status(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error_code":"transaction-insufficient-funds","message":"App wallet balance is below 10000 cents"}"#,
        );
        assert!(funds.is_insufficient_funds());
        let other = classify_status(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error_code":"invalid-input"}"#,
        );
        assert!(!other.is_insufficient_funds());
        assert_eq!(
            c(409, r#"{"error_code":"duplicate-idempotency-key"}"#),
            ErrorClass::DuplicateKey
        );
        assert_eq!(
            c(400, r#"{"message":"Idempotency key already used"}"#),
            ErrorClass::DuplicateKey
        );
        assert_eq!(
            c(409, r#"{"error_code":"resource-busy"}"#),
            ErrorClass::Retryable
        );
        for s in [429, 500, 502, 503] {
            assert_eq!(c(s, ""), ErrorClass::Retryable, "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn the_api_key_never_appears_in_debug_output() {
        let c = ClientConfig {
            base_url: "http://x".into(),
            client_id: "id".into(),
            api_key: "s3cr3t".into(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            rate_limit_rps: 0.0,
            read_retry: ReadRetry::default(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
