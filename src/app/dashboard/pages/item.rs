//! `/items/{id}`: one item (`ops::show`): its payee, state, amount, Dots ids, flow link and
//! last error, the buttons it offers, and its event history.

use maud::{Markup, html};

use super::Shown;
use super::parts::{item_actions, when};
use crate::app::dashboard::ItemSummary;
use crate::app::ops::ItemView;
use crate::money::format_cents;

/// An optional stored string, or a dash.
fn opt(s: &Option<String>) -> Shown<'_> {
    Shown(s.as_deref().unwrap_or("—"))
}

/// The item page.
pub(in crate::app::dashboard) fn item(csrf: &str, v: &ItemView) -> Markup {
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
        unclaimed: v.unclaimed_at.is_some(),
        reminders: v.reminders,
    };
    html! {
        p {
            a href={ "/batches/" (Shown(&v.batch_id)) } {
                "← batch " code { (Shown(&v.batch_id)) }
            }
        }
        h1 { "Payee " (Shown(&v.payee_id)) }
        dl {
            dt { "Item" } dd { code { (Shown(&v.id)) } }
            dt { "State" } dd {
                span class={ "st st-" (Shown(&v.state)) } { (Shown(&v.state)) }
                @if v.unclaimed_at.is_some() { " " span class="st st-unclaimed" { "unclaimed" } }
            }
            @if v.reminders > 0 { dt { "Reminders" } dd { (v.reminders) " sent with a fresh link" } }
            dt { "Amount" } dd { "$" (format_cents(v.amount_cents)) }
            dt { "Dots user" } dd { code { (opt(&v.dots_user_id)) } }
            dt { "Transfer" } dd { code { (opt(&v.transfer_id)) } }
            dt { "Flow link" }
            dd {
                @match v.flow_link.as_deref() {
                    Some(l) if l.starts_with("https://") || l.starts_with("http://") => {
                        a href=(Shown(l)) rel="noreferrer" { (Shown(l)) }
                    }
                    Some(l) => { (Shown(l)) }
                    None => { "—" }
                }
            }
            dt { "Transfer attempts" } dd { (v.attempts) }
            dt { "Last error" } dd class="err" { (opt(&v.last_error)) }
        }
        div class="actions" { (item_actions(csrf, &v.batch_id, &summary, "", true)) }
        h1 { "History" }
        table {
            thead { tr { th { "At" } th { "Kind" } th { "Change" } th { "Detail" } } }
            tbody {
                @for e in &v.events {
                    tr {
                        td { (when(e.at)) }
                        td { (Shown(&e.kind)) }
                        td {
                            @match (&e.from_state, &e.to_state) {
                                (Some(f), Some(t)) => { (Shown(f)) " → " (Shown(t)) }
                                (None, Some(t)) => { "→ " (Shown(t)) }
                                _ => {}
                            }
                        }
                        td { (Shown(&e.detail)) }
                    }
                }
            }
        }
    }
}
