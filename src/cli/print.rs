//! How results look on a terminal. JSON output is the serde form of the same structs.
//! Every string that comes from the store (payee ids, errors, event details, sources) goes
//! through `text::printable` (`p` below): control and bidi characters print as `\u{..}`.

use crate::app::audit::AuditReport;
use crate::app::ops::{ItemView, OpsReport};
use crate::app::schedule::ScheduleView;
use crate::app::{BatchStatus, Submitted};
use crate::batch::BatchId;
use crate::item::ItemState;
use crate::money::format_cents;
use crate::store::{StateCount, Store, StoreError};
use crate::text::printable as p;

pub fn submitted(s: &Submitted) {
    match s {
        Submitted::New {
            batch,
            summary,
            awaiting_approval,
        } => {
            eprintln!(
                "stored {} items, {} total",
                summary.rows,
                format_cents(summary.total_cents)
            );
            if *awaiting_approval {
                eprintln!(
                    "the total is over the approval threshold: nothing is paid until `payrun approve {batch}`"
                );
            }
            println!("{batch}");
        }
        Submitted::Existing { batch, .. } => {
            eprintln!(
                "this file was already submitted as batch {batch}; nothing new stored (use --allow-duplicate to pay it again)"
            );
            println!("{batch}");
        }
        Submitted::DryRun {
            summary,
            new_payees,
        } => println!(
            "valid: {} items, {} total, {} new payees to onboard; nothing stored",
            summary.rows,
            format_cents(summary.total_cents),
            new_payees
        ),
        Submitted::TickTaken => println!("another worker already made this tick's batch"),
    }
}

/// `submit --dry-run`: how many items take each route after their transfer.
pub fn routes(r: &crate::app::routes::RouteCounts) {
    let unread = if r.unread > 0 {
        format!(", {} whose Dots user could not be read now", r.unread)
    } else {
        String::new()
    };
    println!(
        "routes: {} payout flow, {} auto payout (no flow), {} onboarding first{unread}",
        r.payout_flow, r.auto_payout, r.onboarding_first
    );
}

pub fn status(s: &BatchStatus) {
    println!(
        "batch {}  {}  {} items  {}  {}{}",
        p(&s.batch_id),
        p(&s.source),
        s.items,
        format_cents(s.total_cents),
        if s.settled { "settled" } else { "in progress" },
        if s.status == "approved" {
            String::new()
        } else {
            format!("  [{}]", s.status)
        },
    );
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    };
    if let Some(at) = s.paused_at {
        println!(
            "  paused since {}: no new Dots call starts (`payrun resume {}`)",
            when(at),
            p(&s.batch_id)
        );
    }
    if let Some(h) = &s.hold {
        println!(
            "  held since {}: {}: {}{}",
            when(h.since),
            h.reason,
            p(&h.detail),
            s.funds_needed_cents
                .map(|c| format!(" (the App wallet needs {} more)", format_cents(c)))
                .unwrap_or_default()
        );
    }
    if let Some(w) = &s.wallet {
        println!("  {}", p(&w.line()));
    }
    for l in &s.states {
        println!(
            "  {:<16} {:>7} items  {:>12}",
            l.state,
            l.items,
            format_cents(l.cents)
        );
    }
    if s.unclaimed > 0 {
        println!(
            "  unclaimed        {:>7} items  {:>12}  (still open after the last reminder; the \
             money is in the payees' Dots wallets)",
            s.unclaimed,
            format_cents(s.unclaimed_cents)
        );
        for u in &s.unclaimed_items {
            println!(
                "    unclaimed item {}  payee {}  {}  {} reminders, since {}",
                p(&u.item_id),
                p(&u.payee_id),
                format_cents(u.amount_cents),
                u.reminders,
                when(u.unclaimed_at)
            );
        }
    }
}

pub fn item(v: &ItemView) {
    println!(
        "item {}  batch {}  payee {}  {}  {}",
        p(&v.id),
        p(&v.batch_id),
        p(&v.payee_id),
        format_cents(v.amount_cents),
        p(&v.state)
    );
    println!(
        "  dots user {}  transfer {}  attempts {}",
        p(v.dots_user_id.as_deref().unwrap_or("-")),
        p(v.transfer_id.as_deref().unwrap_or("-")),
        v.attempts
    );
    if let Some(l) = &v.flow_link {
        println!("  link {}", p(l));
    }
    if let Some(e) = &v.last_error {
        println!("  last error: {}", p(e));
    }
    for e in &v.events {
        let when = chrono::DateTime::from_timestamp_millis(e.at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let change = match (&e.from_state, &e.to_state) {
            (Some(f), Some(t)) => format!("{} -> {}: ", p(f), p(t)),
            (None, Some(t)) => format!("-> {}: ", p(t)),
            _ => String::new(),
        };
        println!("  {when}  {:<16} {change}{}", p(&e.kind), p(&e.detail));
    }
}

pub fn audit(id: BatchId, r: &AuditReport) {
    println!(
        "batch {id}: {} items, {} transfers at Dots name this batch",
        r.items, r.transfers
    );
    for (what, list) in [
        ("paid in payrun, no transfer at Dots", &r.missing),
        ("more than one transfer", &r.duplicated),
        ("transfer with another amount, user or id", &r.mismatched),
        ("transfer at Dots not recorded in payrun", &r.unrecorded),
        ("transfers naming no item of the batch", &r.orphans),
    ] {
        println!(
            "  {what}: {}",
            if list.is_empty() {
                "none".to_string()
            } else {
                p(&list.join(", ")).into_owned()
            }
        );
    }
    println!(
        "{}",
        if r.ok() {
            "OK: every item paid at most once, as recorded"
        } else {
            "MISMATCH: investigate before rerunning anything"
        }
    );
}

pub fn ops(verb: &str, r: &OpsReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("{verb}: {} item(s)", r.done.len());
    for (id, payee) in &r.done {
        println!("  {} ({})", p(payee), p(id));
    }
    if !r.skipped.is_empty() {
        println!("not {verb}: {} item(s)", r.skipped.len());
        for (id, payee, why) in &r.skipped {
            println!("  {} ({}): {}", p(payee), p(id), p(why));
        }
    }
    Ok(())
}

pub fn schedules(list: &[ScheduleView]) {
    if list.is_empty() {
        println!("no schedules (declare them in jobs/*.toml)");
    }
    for s in list {
        println!(
            "{:<20} {:<22} next {}  last {}  source {}",
            p(&s.name),
            p(&s.cron),
            p(s.next_run.as_deref().unwrap_or("never")),
            p(s.last_tick.as_deref().unwrap_or("never")),
            p(&s.source)
        );
    }
}

/// Live progress bars: one for settled items, one per state.
pub struct Bars {
    multi: indicatif::MultiProgress,
    settled: indicatif::ProgressBar,
    states: Vec<(ItemState, indicatif::ProgressBar)>,
}

impl Bars {
    pub async fn new(store: &Store, batch: BatchId) -> Result<Bars, StoreError> {
        let total = store.batch(batch).await?.map(|b| b.item_count).unwrap_or(0) as u64;
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{prefix:>16} {bar:40} {pos:>7}/{len}")
            .expect("template");
        let settled = multi.add(
            indicatif::ProgressBar::new(total)
                .with_style(style.clone())
                .with_prefix("settled"),
        );
        let states = ItemState::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    multi.add(
                        indicatif::ProgressBar::new(total)
                            .with_style(style.clone())
                            .with_prefix(s.as_str()),
                    ),
                )
            })
            .collect();
        Ok(Bars {
            multi,
            settled,
            states,
        })
    }

    pub fn update(&self, counts: &[StateCount]) {
        let settled: i64 = counts
            .iter()
            .filter(|c| c.state.is_settled())
            .map(|c| c.count)
            .sum();
        self.settled.set_position(settled as u64);
        for (s, bar) in &self.states {
            bar.set_position(counts.iter().find(|c| c.state == *s).map_or(0, |c| c.count) as u64);
        }
        let _ = &self.multi;
    }
}

/// `events list`: one line per event, then each endpoint's delivery.
pub fn event(e: &crate::store::EventDeliveries) {
    let item = e
        .item_id
        .as_deref()
        .map(|i| format!("  item {}", p(i)))
        .unwrap_or_default();
    let deliveries: Vec<String> = e
        .deliveries
        .iter()
        .map(|d| {
            let err = d
                .last_error
                .as_deref()
                .map(|x| format!(" ({})", p(x)))
                .unwrap_or_default();
            format!("{}: {} x{}{err}", p(&d.endpoint), p(&d.status), d.attempts)
        })
        .collect();
    println!(
        "{}  {}  {}  batch {}{item}  {}",
        p(&e.id),
        p(&e.kind),
        crate::events::rfc3339(e.created_at),
        p(&e.batch_id),
        if deliveries.is_empty() {
            "no deliveries".to_string()
        } else {
            deliveries.join("; ")
        }
    );
}
