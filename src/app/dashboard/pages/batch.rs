//! `/batches/{id}?state=`: the batch, its actions (Rerun failed, Cancel), the state filters,
//! and its items (those in the chosen state, or all), each with its own buttons.

use maud::{Markup, html};

use super::Shown;
use super::parts::{button, count, item_actions, progress, status_cell, when};
use crate::app::BatchStatus;
use crate::app::dashboard::ItemSummary;
use crate::batch::BatchId;
use crate::item::ItemState;
use crate::money::format_cents;

/// The batch page; `filter` is the state shown ("" for all), `items` those in it.
pub(in crate::app::dashboard) fn batch(
    csrf: &str,
    batch: BatchId,
    b: &BatchStatus,
    filter: &str,
    items: &[ItemSummary],
) -> Markup {
    let action = |verb: &str| format!("/batches/{batch}/{verb}");
    let failed = count(b, ItemState::Failed);
    let on = |s: &str| if s == filter { " on" } else { "" };
    html! {
        p { a href="/" { "← all batches" } }
        h1 { "Batch " code { (batch) } }
        dl {
            dt { "Status" } dd { (status_cell(csrf, b, filter)) }
            dt { "Source" } dd { (Shown(&b.source)) }
            dt { "Created" } dd { (when(b.created_at)) }
            dt { "Total" } dd { "$" (format_cents(b.total_cents)) " in " (b.items) " items" }
            @if let Some(w) = &b.wallet {
                dt { "App wallet" }
                dd class={ "wallet" @if w.covers != Some(true) { " short" } } { (Shown(&w.line())) }
            }
            dt { "Progress" } dd { (progress(b)) }
            @if b.unclaimed > 0 {
                dt { "Unclaimed" }
                dd class="unclaimed" {
                    (b.unclaimed) " items, $" (format_cents(b.unclaimed_cents))
                    " still open after the last reminder (in the payees' Dots wallets)"
                }
            }
        }
        div class="actions" {
            @if failed > 0 {
                (button(
                    csrf,
                    &action("rerun"),
                    &format!("Rerun failed ({failed})"),
                    "go",
                    &[("state", filter)],
                ))
            }
            @if b.status != "canceled" {
                (button(
                    csrf,
                    &action("cancel"),
                    "Cancel batch (items not yet paid)",
                    "warn",
                    &[("state", filter)],
                ))
            }
        }
        p class="filters" {
            "Show: "
            a class={ "st" (on("")) } href={ "/batches/" (batch) } { "all " (b.items) }
            @for s in ItemState::ALL {
                a class={ "st st-" (s) (on(s.as_str())) } href={ "/batches/" (batch) "?state=" (s) } {
                    (s) " " (count(b, s))
                }
            }
        }
        @if items.is_empty() {
            p class="muted" { "No items in this state." }
        } @else {
            table {
                thead {
                    tr {
                        th { "Payee" } th class="num" { "Amount" } th { "State" }
                        th class="num" { "Attempts" } th { "Last error" } th { "Updated" }
                        th { "Actions" }
                    }
                }
                tbody {
                    @for i in items {
                        tr data-payee=(Shown(&i.payee_id)) data-state=(Shown(&i.state)) {
                            td { a href={ "/items/" (Shown(&i.id)) } { (Shown(&i.payee_id)) } }
                            td class="num" { "$" (i.amount) }
                            td {
                                span class={ "st st-" (Shown(&i.state)) } { (Shown(&i.state)) }
                                @if i.unclaimed {
                                    " " span class="st st-unclaimed" { "unclaimed" }
                                }
                            }
                            td class="num" { (i.attempts) }
                            td class="err" { (Shown(i.last_error.as_deref().unwrap_or(""))) }
                            td { (when(i.updated_at)) }
                            td { (item_actions(csrf, &b.batch_id, i, filter, false)) }
                        }
                    }
                }
            }
        }
    }
}
