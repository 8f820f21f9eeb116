//! The dashboard's HTML as maud templates (`html!`: checked at compile time, every `(expr)`
//! escaped by default), one file per page: `layout` (the frame, headers and error page),
//! `batches` (`/`), `batch` (`/batches/{id}`), `item` (`/items/{id}`), and `parts`, the
//! widgets they share (badges, progress, the one-button forms).
//!
//! Templates are pure: they take what the handlers in `html` read from the store and return
//! markup. Every string that came from the store, a query or a form goes in through [`Shown`],
//! which makes control and bidi characters visible (`text::printable`) before escaping; no
//! template uses `PreEscaped` on such data (the only `PreEscaped` is the constant stylesheet).

mod batch;
mod batches;
mod item;
mod layout;
mod parts;

pub(super) use batch::batch;
pub(super) use batches::{backlog, batches};
pub(super) use item::item;
pub(super) use layout::{error, page};

use maud::{Escaper, Render};

/// Stored (or otherwise outside) text as a page shows it: control and bidi characters as
/// visible `\u{..}` escapes (a payee id with U+202E in it shows as `\u{202e}`, never as
/// another name), then HTML-escaped for element content and quoted attribute values
/// (`& < > "` as maud does, and `'` too).
#[derive(Debug, Clone, Copy)]
pub(super) struct Shown<'a>(pub &'a str);

impl Render for Shown<'_> {
    fn render_to(&self, buffer: &mut String) {
        use std::fmt::Write as _;
        let text = crate::text::printable(self.0);
        for (n, piece) in text.split('\'').enumerate() {
            if n > 0 {
                buffer.push_str("&#39;");
            }
            // Writing to a String cannot fail.
            let _ = Escaper::new(buffer).write_str(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ops::ItemView;
    use crate::app::report::{BatchStatus, StateLine};
    use crate::batch::BatchId;
    use crate::store::ItemEvent;

    use super::super::ItemSummary;

    /// Markup, a bidi override, an escape sequence and a bell: in every stored string.
    const EVIL: &str = "<b>'x\"&\u{202e}\u{1b}[31m\u{7}";
    const SHOWN: &str = "&lt;b&gt;&#39;x&quot;&amp;\\u{202e}\\u{1b}[31m\\u{7}";

    fn assert_safe(page: &str) {
        for raw in ["<b>", "\u{202e}", "\u{1b}", "\u{7}"] {
            assert!(!page.contains(raw), "{raw:?} raw in {page}");
        }
        assert!(page.contains(SHOWN), "{page}");
    }

    fn evil() -> Option<String> {
        Some(EVIL.to_string())
    }

    #[test]
    fn shown_text_is_printable_then_escaped() {
        assert_eq!(Shown(EVIL).render().into_string(), SHOWN);
        assert_eq!(Shown("plain · text").render().into_string(), "plain · text");
    }

    #[test]
    fn every_stored_string_on_every_page_goes_through_shown() {
        let status = BatchStatus {
            batch_id: EVIL.into(),
            status: "held".into(),
            awaiting_approval: true,
            paused_at: None,
            hold: Some(crate::batch::Hold {
                reason: crate::batch::HoldReason::InsufficientFunds,
                detail: EVIL.into(),
                since: 0,
                funds_needed_cents: Some(100),
                from_line: None,
            }),
            funds_needed_cents: Some(100),
            source: EVIL.into(),
            created_at: 0,
            items: 1,
            total_cents: 100,
            settled: false,
            states: vec![StateLine {
                state: EVIL.into(),
                items: 1,
                cents: 100,
            }],
            wallet: Some(crate::app::wallet::WalletView {
                app_id: EVIL.into(),
                balance_cents: None,
                committed_cents: 0,
                batch_cents: 100,
                covers: None,
                error: Some(EVIL.into()),
            }),
            unclaimed: 1,
            unclaimed_cents: 100,
            unclaimed_items: vec![],
        };
        assert_safe(&batches("csrf", std::slice::from_ref(&status)).into_string());
        let summary = ItemSummary {
            id: EVIL.into(),
            payee_id: EVIL.into(),
            amount_cents: 100,
            amount: "1.00".into(),
            state: "failed".into(),
            dots_user_id: evil(),
            transfer_id: None,
            flow_link: evil(),
            attempts: 1,
            last_error: evil(),
            updated_at: 0,
            unclaimed: true,
            reminders: 3,
        };
        let id = BatchId::new_random();
        let page = batch("csrf", id, &status, "", &[summary]).into_string();
        assert_safe(&page);
        let view = ItemView {
            id: EVIL.into(),
            batch_id: EVIL.into(),
            payee_id: EVIL.into(),
            amount_cents: 100,
            state: "failed".into(),
            dots_user_id: evil(),
            transfer_id: evil(),
            flow_link: Some(format!("https://x/{EVIL}")),
            attempts: 1,
            last_error: evil(),
            reminders: 3,
            unclaimed_at: Some(0),
            events: vec![ItemEvent {
                id: 1,
                at: 0,
                kind: EVIL.into(),
                from_state: evil(),
                to_state: evil(),
                detail: EVIL.into(),
            }],
        };
        assert_safe(&item("csrf", &view).into_string());
        let framed = page_markup("title", Some(EVIL), maud::html! {});
        assert_safe(&framed.into_string());
    }

    use layout::page_markup;
}
