//! The pages: batches (`/`), one batch's items (`/batches/{id}?state=`), one item with its
//! history (`/items/{id}`) and `/login`. No script: the buttons are forms posting to the
//! routes in `actions`, which redirect back here with a flash message.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{COOKIE, Dash, DashError, ItemSummary, items_in};
use crate::app::ops;
use crate::app::{BatchStatus, batch_status, list_status};
use crate::batch::{BatchId, ItemId};
use crate::item::ItemState;
use crate::money::format_cents;

/// Escapes text for HTML element content and quoted attribute values. Control and bidi
/// characters are first made visible (`text::printable`): a payee id with U+202E in it shows
/// as `\u{202e}`, never as another name.
pub fn esc(s: &str) -> String {
    let s = crate::text::printable(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f5f6f8}
header{background:#1d3557;color:#fff;padding:10px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 24px;max-width:1200px}h1{font-size:20px;margin:8px 0 12px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e6ea;vertical-align:middle}
th{background:#eef1f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px}.muted{color:#6b7480}.err{color:#a4161a;max-width:380px}
.st{display:inline-block;border-radius:10px;padding:1px 8px;margin:1px;font-size:12px;background:#e3e6ea;color:#1d232a;text-decoration:none}
.st-completed{background:#d8f3dc}.st-awaiting_payout,.st-onboarding{background:#dbe9f6}
.st-failed{background:#f8d7da;color:#7a1118}.st-canceled{background:#eee;color:#666}
.st-transferring,.st-transferred,.st-pending{background:#fff3cd}
.st-approved{background:#d8f3dc}.st-awaiting_approval{background:#ffe5b4}
.filters a{margin-right:4px}.filters a.on{outline:2px solid #1d3557}
form.inline{display:inline;margin:0 2px}button{font:inherit;padding:2px 10px;border:1px solid #8a94a0;border-radius:4px;background:#fff;cursor:pointer}
button.warn{border-color:#a4161a;color:#a4161a}button.go{border-color:#1d6b35;color:#1d6b35}
.flash{background:#fff;border-left:4px solid #1d3557;padding:8px 12px;margin:0 0 12px;box-shadow:0 1px 2px #0002}
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px;background:#fff;padding:12px;box-shadow:0 1px 2px #0002}
dt{font-weight:600}dd{margin:0}progress{width:140px;vertical-align:middle}.actions{margin:12px 0}
";

/// A whole page, with headers that keep it out of caches, frames and other origins' reach.
fn page(status: StatusCode, title: &str, msg: Option<&str>, body: &str) -> Response {
    let flash = msg
        .filter(|m| !m.is_empty())
        .map(|m| format!("<p class=\"flash\" role=\"status\">{}</p>", esc(m)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · payrun</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">payrun · payouts dashboard</a></header><main>{flash}{body}</main></body></html>",
        esc(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

pub(super) fn error_page(e: DashError) -> Response {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"/\">Back to all batches</a></p>",
        e.status(),
        esc(e.message())
    );
    page(e.status(), "error", None, &body)
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

fn settled(b: &BatchStatus) -> i64 {
    b.states
        .iter()
        .filter(|l| l.state.parse::<ItemState>().is_ok_and(|s| s.is_settled()))
        .map(|l| l.items)
        .sum()
}

fn count(b: &BatchStatus, state: ItemState) -> i64 {
    b.states
        .iter()
        .find(|l| l.state == state.as_str())
        .map_or(0, |l| l.items)
}

fn progress(b: &BatchStatus) -> String {
    let s = settled(b);
    format!(
        "<progress value=\"{s}\" max=\"{}\"></progress> <span class=\"settled\">{s} / {} settled</span>",
        b.items.max(1),
        b.items
    )
}

fn state_badges(b: &BatchStatus) -> String {
    let mut out = String::new();
    for l in &b.states {
        let _ = write!(
            out,
            "<a class=\"st st-{s}\" href=\"/batches/{id}?state={s}\">{s} {n}</a>",
            s = esc(&l.state),
            id = esc(&b.batch_id),
            n = l.items
        );
    }
    out
}

/// A one-button POST form; `fields` are hidden (name, value) pairs.
fn button(d: &Dash, action: &str, label: &str, class: &str, fields: &[(&str, &str)]) -> String {
    let mut f = format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(action),
        esc(&d.auth.csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            f,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(name),
            esc(value)
        );
    }
    let _ = write!(
        f,
        "<button type=\"submit\" class=\"{class}\">{}</button></form>",
        esc(label)
    );
    f
}

fn status_cell(d: &Dash, b: &BatchStatus, state_filter: &str) -> String {
    let badge = format!("<span class=\"st st-{s}\">{s}</span>", s = esc(&b.status));
    if b.status == "awaiting_approval" {
        let action = format!("/batches/{}/approve", b.batch_id);
        format!(
            "{badge} {}",
            button(d, &action, "Approve", "go", &[("state", state_filter)])
        )
    } else {
        badge
    }
}

/// `GET /`: every batch, newest first, with progress, counts per state and totals.
pub(super) async fn index(State(d): State<Dash>, Query(q): Query<PageQuery>) -> Response {
    let batches = match list_status(&d.store, 200).await {
        Ok(b) => b,
        Err(e) => return error_page(e.into()),
    };
    let mut body = String::from("<h1>Batches</h1>");
    if batches.is_empty() {
        body.push_str(
            "<p class=\"muted\">No batches yet: <code>payrun submit FILE.csv</code>.</p>",
        );
    } else {
        body.push_str(
            "<table><thead><tr><th>Batch</th><th>Created</th><th>Source</th><th>Status</th>\
             <th>Progress</th><th>Items by state</th><th class=\"num\">Items</th><th class=\"num\">Total</th></tr></thead><tbody>",
        );
        for b in &batches {
            let _ = write!(
                body,
                "<tr data-batch=\"{id}\"><td><a href=\"/batches/{id}\"><code>{id}</code></a></td><td>{created}</td>\
                 <td>{source}</td><td>{status}</td><td>{progress}</td><td>{badges}</td>\
                 <td class=\"num\">{n}</td><td class=\"num\">${total}</td></tr>",
                id = esc(&b.batch_id),
                created = when(b.created_at),
                source = esc(&b.source),
                status = status_cell(&d, b, ""),
                progress = progress(b),
                badges = state_badges(b),
                n = b.items,
                total = format_cents(b.total_cents),
            );
        }
        body.push_str("</tbody></table>");
    }
    page(StatusCode::OK, "batches", q.msg.as_deref(), &body)
}

/// `GET /batches/{id}?state=`: the batch, its actions, and its items (optionally one state).
pub(super) async fn batch_page(
    State(d): State<Dash>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    match batch_body(&d, &id, &q).await {
        Ok((title, body)) => page(StatusCode::OK, &title, q.msg.as_deref(), &body),
        Err(e) => error_page(e),
    }
}

async fn batch_body(d: &Dash, id: &str, q: &PageQuery) -> Result<(String, String), DashError> {
    let batch: BatchId = super::parse_id("batch", id)?;
    let Some(b) = batch_status(&d.store, batch).await? else {
        return Err(DashError::NotFound(format!("no batch {batch}")));
    };
    let filter = q.state.as_deref().unwrap_or("");
    let items = items_in(&d.store, batch, Some(filter)).await?;
    let action = |verb: &str| format!("/batches/{batch}/{verb}");
    let mut body = format!(
        "<p><a href=\"/\">← all batches</a></p><h1>Batch <code>{batch}</code></h1>\
         <dl><dt>Status</dt><dd>{status}</dd><dt>Source</dt><dd>{source}</dd>\
         <dt>Created</dt><dd>{created}</dd><dt>Total</dt><dd>${total} in {n} items</dd>\
         <dt>Progress</dt><dd>{progress}</dd></dl><div class=\"actions\">",
        status = status_cell(d, &b, filter),
        source = esc(&b.source),
        created = when(b.created_at),
        total = format_cents(b.total_cents),
        n = b.items,
        progress = progress(&b),
    );
    let failed = count(&b, ItemState::Failed);
    if failed > 0 {
        let label = format!("Rerun failed ({failed})");
        body.push_str(&button(
            d,
            &action("rerun"),
            &label,
            "go",
            &[("state", filter)],
        ));
    }
    if b.status != "canceled" {
        body.push_str(&button(
            d,
            &action("cancel"),
            "Cancel batch (items not yet paid)",
            "warn",
            &[("state", filter)],
        ));
    }
    body.push_str("</div><p class=\"filters\">Show: ");
    let on = |s: &str| if s == filter { " on" } else { "" };
    let _ = write!(
        body,
        "<a class=\"st{}\" href=\"/batches/{batch}\">all {}</a>",
        on(""),
        b.items
    );
    for s in ItemState::ALL {
        let _ = write!(
            body,
            "<a class=\"st st-{s}{on}\" href=\"/batches/{batch}?state={s}\">{s} {n}</a>",
            on = on(s.as_str()),
            n = count(&b, s)
        );
    }
    body.push_str("</p>");
    if items.is_empty() {
        body.push_str("<p class=\"muted\">No items in this state.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Payee</th><th class=\"num\">Amount</th><th>State</th>\
             <th class=\"num\">Attempts</th><th>Last error</th><th>Updated</th><th>Actions</th></tr></thead><tbody>",
        );
        for i in &items {
            let _ = write!(
                body,
                "<tr data-payee=\"{payee}\" data-state=\"{state}\"><td><a href=\"/items/{id}\">{payee}</a></td>\
                 <td class=\"num\">${amount}</td><td><span class=\"st st-{state}\">{state}</span></td>\
                 <td class=\"num\">{attempts}</td><td class=\"err\">{error}</td><td>{updated}</td><td>{actions}</td></tr>",
                id = esc(&i.id),
                payee = esc(&i.payee_id),
                amount = i.amount,
                state = esc(&i.state),
                attempts = i.attempts,
                error = esc(i.last_error.as_deref().unwrap_or("")),
                updated = when(i.updated_at),
                actions = item_actions(d, &b.batch_id, i, filter, false),
            );
        }
        body.push_str("</tbody></table>");
    }
    Ok((format!("batch {batch}"), body))
}

/// The buttons an item offers: Rerun (failed), Cancel (not paid yet), New link (waiting on
/// its payee). `ops` has the last word; these only hide buttons that would surely be refused.
fn item_actions(d: &Dash, batch: &str, i: &ItemSummary, filter: &str, from_item: bool) -> String {
    let Ok(state) = i.state.parse::<ItemState>() else {
        return String::new();
    };
    let from = if from_item { "item" } else { "" };
    let fields = [("item", i.id.as_str()), ("state", filter), ("from", from)];
    let mut out = String::new();
    if state == ItemState::Failed {
        out.push_str(&button(
            d,
            &format!("/batches/{batch}/rerun"),
            "Rerun",
            "go",
            &fields,
        ));
    }
    if state.is_waiting_on_payee() {
        let action = format!("/items/{}/retry-flow", i.id);
        out.push_str(&button(d, &action, "New flow link", "", &fields));
    }
    let unpaid = matches!(state, ItemState::Pending | ItemState::Onboarding)
        || (state == ItemState::Failed && i.transfer_id.is_none());
    if unpaid {
        out.push_str(&button(
            d,
            &format!("/batches/{batch}/cancel"),
            "Cancel",
            "warn",
            &fields,
        ));
    }
    out
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
    let v = match ops::show(&d.store, item).await {
        Ok(v) => v,
        Err(e) => return error_page(e.into()),
    };
    let link = match v.flow_link.as_deref() {
        Some(l) if l.starts_with("https://") || l.starts_with("http://") => {
            format!("<a href=\"{0}\" rel=\"noreferrer\">{0}</a>", esc(l))
        }
        Some(l) => esc(l),
        None => "—".into(),
    };
    let opt = |s: &Option<String>| esc(s.as_deref().unwrap_or("—"));
    let summary = ItemSummary {
        id: v.id.clone(),
        payee_id: v.payee_id.clone(),
        amount_cents: v.amount_cents,
        amount: format_cents(v.amount_cents),
        state: v.state.clone(),
        dots_user_id: v.dots_user_id.clone(),
        transfer_id: v.transfer_id.clone(),
        flow_link: v.flow_link.clone(),
        attempts: v.attempts,
        last_error: v.last_error.clone(),
        updated_at: 0,
    };
    let mut body = format!(
        "<p><a href=\"/batches/{batch}\">← batch <code>{batch}</code></a></p>\
         <h1>Payee {payee}</h1><dl><dt>Item</dt><dd><code>{id}</code></dd>\
         <dt>State</dt><dd><span class=\"st st-{state}\">{state}</span></dd><dt>Amount</dt><dd>${amount}</dd>\
         <dt>Dots user</dt><dd><code>{user}</code></dd><dt>Transfer</dt><dd><code>{transfer}</code></dd>\
         <dt>Flow link</dt><dd>{link}</dd><dt>Transfer attempts</dt><dd>{attempts}</dd>\
         <dt>Last error</dt><dd class=\"err\">{error}</dd></dl><div class=\"actions\">{actions}</div>\
         <h1>History</h1><table><thead><tr><th>At</th><th>Kind</th><th>Change</th><th>Detail</th></tr></thead><tbody>",
        batch = esc(&v.batch_id),
        payee = esc(&v.payee_id),
        id = esc(&v.id),
        state = esc(&v.state),
        amount = format_cents(v.amount_cents),
        user = opt(&v.dots_user_id),
        transfer = opt(&v.transfer_id),
        attempts = v.attempts,
        error = opt(&v.last_error),
        actions = item_actions(&d, &v.batch_id, &summary, "", true),
    );
    for e in &v.events {
        let change = match (&e.from_state, &e.to_state) {
            (Some(f), Some(t)) => format!("{} → {}", esc(f), esc(t)),
            (None, Some(t)) => format!("→ {}", esc(t)),
            _ => String::new(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{change}</td><td>{}</td></tr>",
            when(e.at),
            esc(&e.kind),
            esc(&e.detail)
        );
    }
    body.push_str("</tbody></table>");
    page(
        StatusCode::OK,
        &format!("item {}", v.payee_id),
        q.msg.as_deref(),
        &body,
    )
}
