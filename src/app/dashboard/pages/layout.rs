//! The frame every page shares (title, stylesheet, header, flash message), the response
//! headers that keep a page out of caches, frames and other origins' reach, and the error page.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::Shown;
use crate::app::dashboard::DashError;

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

/// `body` in the frame, with `title` and the flash message `msg` (if any) shown.
pub(super) fn page_markup(title: &str, msg: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (Shown(title)) " · payrun" }
                // A constant of this file, never data.
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { a href="/" { "payrun · payouts dashboard" } }
                main {
                    @if let Some(m) = msg.filter(|m| !m.is_empty()) {
                        p class="flash" role="status" { (Shown(m)) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A whole page, with headers that keep it out of caches, frames and other origins' reach.
pub(in crate::app::dashboard) fn page(
    status: StatusCode,
    title: &str,
    msg: Option<&str>,
    body: Markup,
) -> Response {
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
        page_markup(title, msg, body).into_string(),
    )
        .into_response()
}

/// The page a failed request shows: its status and message, and the way back.
pub(in crate::app::dashboard) fn error(e: &DashError) -> Response {
    let body = html! {
        h1 { (e.status()) }
        p { (Shown(e.message())) }
        p { a href="/" { "Back to all batches" } }
    };
    page(e.status(), "error", None, body)
}
