//! The form actions behind the pages' buttons: each checks the CSRF field (when the cookie is
//! the only credential), calls the `ops` (or `control`) function the CLI calls, and answers 303
//! back to the page it came from with what happened as the flash message (`?msg=`).

use std::fmt::Write as _;

use axum::Form;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::error_page;
use super::{AuthVia, Dash, DashError, csrf_passes, forbidden_csrf};
use crate::app::control::{self, Target};
use crate::app::ops::{self, OpsReport};
use crate::batch::{BatchId, ItemId};
use crate::item::ItemState;

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The fields every action form sends (all but `csrf` optional).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ActionForm {
    csrf: Option<String>,
    /// Limit a batch action to this item.
    item: Option<String>,
    /// The state filter to return to.
    state: Option<String>,
    /// `item`: return to the item's page rather than the batch's.
    from: Option<String>,
}

impl ActionForm {
    fn item(&self) -> Result<Option<ItemId>, DashError> {
        match self.item.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => super::parse_id("item", s).map(Some),
        }
    }

    /// Where to send the browser after the action, with `msg` as the flash message. Only ever
    /// a path of this dashboard (the state filter must name a state).
    fn back(&self, batch: &str, msg: &str) -> Response {
        let to = match (self.from.as_deref(), self.item.as_deref()) {
            (Some("item"), Some(item)) if item.parse::<ItemId>().is_ok() => {
                format!("/items/{item}?msg={}", enc(msg))
            }
            _ => {
                let state = self
                    .state
                    .as_deref()
                    .and_then(|s| s.parse::<ItemState>().ok())
                    .map(|s| format!("state={s}&"))
                    .unwrap_or_default();
                format!("/batches/{batch}?{state}msg={}", enc(msg))
            }
        };
        Redirect::to(&to).into_response()
    }
}

fn describe(verb: &str, r: &OpsReport) -> String {
    let n = r.done.len();
    let mut msg = format!("{verb} {n} item{}", if n == 1 { "" } else { "s" });
    if !r.done.is_empty() && r.done.len() <= 5 {
        let payees: Vec<_> = r.done.iter().map(|(_, p)| p.as_str()).collect();
        let _ = write!(msg, " ({})", payees.join(", "));
    }
    if !r.skipped.is_empty() {
        let _ = write!(msg, "; skipped {}", r.skipped.len());
        for (_, payee, why) in r.skipped.iter().take(3) {
            let _ = write!(msg, "; {payee}: {why}");
        }
        if r.skipped.len() > 3 {
            msg.push_str("; …");
        }
    }
    msg
}

/// Runs a form action after the CSRF check, answering 303 back (or an error page).
async fn act<F>(via: AuthVia, d: &Dash, form: &ActionForm, run: F) -> Response
where
    F: AsyncFnOnce() -> Result<(String, String), DashError>,
{
    if !csrf_passes(d, via, form.csrf.as_deref()) {
        return forbidden_csrf();
    }
    match run().await {
        Ok((batch, msg)) => form.back(&batch, &msg),
        Err(e) => error_page(e),
    }
}

pub(super) async fn approve(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(via, &d, &f, async || {
        let batch: BatchId = super::parse_id("batch", &id)?;
        let mut q = d.queue.clone();
        let msg = if ops::approve(&d.store, &mut q, batch).await? {
            "approved: its items are queued"
        } else {
            "not awaiting approval: nothing to do"
        };
        Ok((batch.to_string(), msg.to_string()))
    })
    .await
}

pub(super) async fn cancel(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(via, &d, &f, async || {
        let batch: BatchId = super::parse_id("batch", &id)?;
        let r = ops::cancel(&d.store, batch, f.item()?).await?;
        Ok((batch.to_string(), describe("canceled", &r)))
    })
    .await
}

pub(super) async fn rerun(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(via, &d, &f, async || {
        let batch: BatchId = super::parse_id("batch", &id)?;
        let mut q = d.queue.clone();
        let r = ops::rerun(&d.store, &mut q, batch, f.item()?).await?;
        Ok((batch.to_string(), describe("rerun", &r)))
    })
    .await
}

pub(super) async fn retry_flow(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Path(id): Path<String>,
    Form(mut f): Form<ActionForm>,
) -> Response {
    // The item comes from the path; the form's copy only says where to return.
    f.item = Some(id.clone());
    act(via, &d, &f, async || {
        let item: ItemId = super::parse_id("item", &id)?;
        let Some(rec) = d.store.item(item).await? else {
            return Err(DashError::NotFound(format!("no item {item}")));
        };
        let mut q = d.queue.clone();
        let msg = match ops::retry_flow(&d.store, &mut q, item).await? {
            Ok(was) => format!(
                "{}: a new flow link is on its way (was {was})",
                rec.payee_id
            ),
            Err(why) => format!("{}: {why}", rec.payee_id),
        };
        Ok((rec.batch_id.to_string(), msg))
    })
    .await
}

pub(super) async fn pause(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(via, &d, &f, async || {
        let batch: BatchId = super::parse_id("batch", &id)?;
        let out = control::pause(&d.store, Target::Batch(batch)).await?;
        Ok((batch.to_string(), out.message))
    })
    .await
}

pub(super) async fn resume(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(via, &d, &f, async || {
        let batch: BatchId = super::parse_id("batch", &id)?;
        let mut q = d.queue.clone();
        let out = control::resume(&d.store, &mut q, Target::Batch(batch)).await?;
        Ok((batch.to_string(), out.message))
    })
    .await
}

/// Pause all / Resume all: like the batch actions, but back to the batch list.
async fn act_all(via: AuthVia, d: &Dash, form: &ActionForm, pause: bool) -> Response {
    if !csrf_passes(d, via, form.csrf.as_deref()) {
        return forbidden_csrf();
    }
    let out = if pause {
        control::pause(&d.store, Target::All).await
    } else {
        control::resume(&d.store, &mut d.queue.clone(), Target::All).await
    };
    match out {
        Ok(out) => Redirect::to(&format!("/?msg={}", enc(&out.message))).into_response(),
        Err(e) => error_page(e.into()),
    }
}

pub(super) async fn pause_all(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Form(f): Form<ActionForm>,
) -> Response {
    act_all(via, &d, &f, true).await
}

pub(super) async fn resume_all(
    State(d): State<Dash>,
    Extension(via): Extension<AuthVia>,
    Form(f): Form<ActionForm>,
) -> Response {
    act_all(via, &d, &f, false).await
}
