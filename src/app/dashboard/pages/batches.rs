//! `/`: every batch, newest first, with its status, progress, items by state and total.

use maud::{Markup, html};

use super::Shown;
use super::parts::{control_all, progress, state_badges, status_cell, when};
use crate::app::BatchStatus;
use crate::money::format_cents;

/// The batch list (`csrf` goes in the Approve, Pause and Resume forms).
pub(in crate::app::dashboard) fn batches(csrf: &str, batches: &[BatchStatus]) -> Markup {
    html! {
        h1 { "Batches" }
        (control_all(csrf))
        @if batches.is_empty() {
            p class="muted" { "No batches yet: " code { "payrun submit FILE.csv" } "." }
        } @else {
            table {
                thead {
                    tr {
                        th { "Batch" } th { "Created" } th { "Source" } th { "Status" }
                        th { "Progress" } th { "Items by state" }
                        th class="num" { "Items" } th class="num" { "Total" }
                    }
                }
                tbody {
                    @for b in batches {
                        tr data-batch=(Shown(&b.batch_id)) {
                            td {
                                a href={ "/batches/" (Shown(&b.batch_id)) } {
                                    code { (Shown(&b.batch_id)) }
                                }
                            }
                            td { (when(b.created_at)) }
                            td { (Shown(&b.source)) }
                            td { (status_cell(csrf, b, "")) }
                            td { (progress(b)) }
                            td { (state_badges(b)) }
                            td class="num" { (b.items) }
                            td class="num" { "$" (format_cents(b.total_cents)) }
                        }
                    }
                }
            }
        }
    }
}

/// Outbound events per endpoint: how many wait to be delivered, since when, and how many
/// failed after their last try (`payrun events list --failed`, `payrun events replay`).
pub(in crate::app::dashboard) fn backlog(endpoints: &[crate::store::EndpointBacklog]) -> Markup {
    html! {
        @if !endpoints.is_empty() {
            h2 { "Event endpoints" }
            table id="event-endpoints" {
                thead {
                    tr {
                        th { "Endpoint" } th class="num" { "Pending" }
                        th { "Oldest pending" } th class="num" { "Failed" }
                    }
                }
                tbody {
                    @for e in endpoints {
                        tr data-endpoint=(Shown(&e.endpoint)) {
                            td { code { (Shown(&e.endpoint)) } }
                            td class="num" { (e.pending) }
                            td { @if let Some(t) = e.oldest_pending_at { (when(t)) } @else { "-" } }
                            td class="num" {
                                @if e.failed > 0 { strong class="bad" { (e.failed) } } @else { "0" }
                            }
                        }
                    }
                }
            }
        }
    }
}
