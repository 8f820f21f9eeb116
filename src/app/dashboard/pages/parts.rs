//! What several pages show: times, progress, state badges, the batch status cell, and the
//! one-button POST forms (each carrying the CSRF field) an item or a batch offers.

use maud::{Markup, html};

use super::Shown;
use crate::app::BatchStatus;
use crate::app::dashboard::ItemSummary;
use crate::item::ItemState;

/// A stored time (milliseconds since the epoch) as UTC.
pub(super) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn settled(b: &BatchStatus) -> i64 {
    b.states
        .iter()
        .filter(|l| l.state.parse::<ItemState>().is_ok_and(|s| s.is_settled()))
        .map(|l| l.items)
        .sum()
}

/// How many of the batch's items are in `state`.
pub(super) fn count(b: &BatchStatus, state: ItemState) -> i64 {
    b.states
        .iter()
        .find(|l| l.state == state.as_str())
        .map_or(0, |l| l.items)
}

/// A progress bar and "N / M settled".
pub(super) fn progress(b: &BatchStatus) -> Markup {
    let s = settled(b);
    html! {
        progress value=(s) max=(b.items.max(1)) {}
        " "
        span class="settled" { (s) " / " (b.items) " settled" }
    }
}

/// One badge per state the batch has items in, each a link to the batch filtered by it.
pub(super) fn state_badges(b: &BatchStatus) -> Markup {
    html! {
        @for l in &b.states {
            a class={ "st st-" (Shown(&l.state)) }
                href={ "/batches/" (Shown(&b.batch_id)) "?state=" (Shown(&l.state)) } {
                (Shown(&l.state)) " " (l.items)
            }
        }
    }
}

/// A one-button POST form to `action`; `fields` are hidden (name, value) pairs.
pub(super) fn button(
    csrf: &str,
    action: &str,
    label: &str,
    class: &'static str,
    fields: &[(&'static str, &str)],
) -> Markup {
    html! {
        form class="inline" method="post" action=(Shown(action)) {
            input type="hidden" name="csrf" value=(Shown(csrf));
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(Shown(value));
            }
            button type="submit" class=(class) { (Shown(label)) }
        }
    }
}

/// Whether every item of the batch is completed, failed or canceled (nothing to pause).
fn finished(b: &BatchStatus) -> bool {
    b.states.iter().all(|l| {
        matches!(
            l.state.parse::<ItemState>(),
            Ok(ItemState::Completed | ItemState::Failed | ItemState::Canceled)
        )
    })
}

/// The batch's status badge (`paused`, `held` with its hold), with Approve while it awaits
/// approval, and Pause or Resume while it has work left.
pub(super) fn status_cell(csrf: &str, b: &BatchStatus, state_filter: &str) -> Markup {
    let action = |verb: &str| format!("/batches/{}/{verb}", b.batch_id);
    let fields = [("state", state_filter)];
    html! {
        span class={ "st st-" (Shown(&b.status)) } { (Shown(&b.status)) }
        @if let Some(at) = b.paused_at {
            " " span class="muted paused" { "since " (when(at)) }
        }
        @if let Some(h) = &b.hold {
            " "
            span class="hold" {
                "held: " (h.reason.as_str()) " since " (when(h.since)) " — " (Shown(&h.detail))
                @if let Some(c) = b.funds_needed_cents {
                    " (the App wallet needs $" (crate::money::format_cents(c)) " more)"
                }
            }
        }
        @if b.awaiting_approval && b.status != "canceled" {
            " " (button(csrf, &action("approve"), "Approve", "go", &fields))
        }
        @if b.status != "canceled" {
            @if b.paused_at.is_some() {
                " " (button(csrf, &action("resume"), "Resume", "go", &fields))
            } @else if !finished(b) {
                " " (button(csrf, &action("pause"), "Pause", "warn", &fields))
            }
        }
    }
}

/// Pause all / Resume all (the index page).
pub(super) fn control_all(csrf: &str) -> Markup {
    html! {
        div class="actions" {
            (button(csrf, "/pause-all", "Pause all", "warn", &[]))
            " "
            (button(csrf, "/resume-all", "Resume all", "go", &[]))
        }
    }
}

/// The buttons an item offers: Rerun (failed), New flow link (waiting on its payee), Cancel
/// (not paid yet). `ops` has the last word; these only hide buttons that would surely be
/// refused. `from_item`: the action returns to the item's page rather than the batch's.
pub(super) fn item_actions(
    csrf: &str,
    batch: &str,
    i: &ItemSummary,
    filter: &str,
    from_item: bool,
) -> Markup {
    let Ok(state) = i.state.parse::<ItemState>() else {
        return html! {};
    };
    let from = if from_item { "item" } else { "" };
    let fields = [("item", i.id.as_str()), ("state", filter), ("from", from)];
    let unpaid = matches!(state, ItemState::Pending | ItemState::Onboarding)
        || (state == ItemState::Failed && i.transfer_id.is_none());
    html! {
        @if state == ItemState::Failed {
            (button(csrf, &format!("/batches/{batch}/rerun"), "Rerun", "go", &fields))
        }
        @if state.is_waiting_on_payee() {
            (button(csrf, &format!("/items/{}/retry-flow", i.id), "New flow link", "", &fields))
        }
        @if unpaid {
            (button(csrf, &format!("/batches/{batch}/cancel"), "Cancel", "warn", &fields))
        }
    }
}
