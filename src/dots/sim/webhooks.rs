//! Outgoing webhooks: the events the simulated state announces, their Svix-signed delivery to
//! `SimConfig::webhook_url` with redelivery, and the payee ticker that makes flows complete
//! without anyone reading them.
//!
//! What it owns: the event channel fed by `state` (under the state lock, never blocking), the
//! dispatcher task turning events into messages, one delivery task per message, the delivery
//! records tests read, and the webhook fault knobs (duplicate, bad signature, stale timestamp).
//!
//! Guarantees:
//! - API handlers never wait on delivery: events go through an unbounded channel.
//! - Every message gets one `svix-id` (`msg_<random>`) kept across all its attempts; attempt
//!   `n` starts `webhook_retry_delays_ms[n]` ms (real time) after the previous one ended, and
//!   after the last one the message is `Failed`. A 2xx within `webhook_timeout_ms` is success;
//!   anything else (3xx included, redirects are not followed) is a failure.
//! - `svix-timestamp` is the *sim clock* in unix seconds, so a receiver checking the 5-minute
//!   tolerance against a clock that ignores `Sim::clock().advance` refuses deliveries once the
//!   clock has been moved more than 5 minutes; such receivers should use the sim clock.
//! - Signatures come from `webhook::verify::Verifier::sign`, the only part of payrun outside
//!   `dots` that the simulator uses.
//! - No ordering between messages (as with Svix): each message is delivered by its own task.

use super::Sim;
use super::wire::{flow_updated_webhook, transfer_terminal_webhook, transfer_updated_webhook};
use crate::dots::types::Transfer;
use crate::webhook::verify::{Verifier, WebhookError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

/// The secret used when `webhook_url` is set but `webhook_secret` is not:
/// `whsec_` + base64("payrun-sim-webhook-secret").
pub const DEFAULT_WEBHOOK_SECRET: &str = "whsec_cGF5cnVuLXNpbS13ZWJob29rLXNlY3JldA==";

/// A change Dots would announce by webhook, sent by `state` while it holds the lock.
#[derive(Debug, Clone)]
pub enum SimEvent {
    /// A payee completed the flow's steps.
    FlowUpdated(Uuid),
    /// A transfer was created (born `completed`, or `pending` for a held user or a transfer
    /// batch that completes later).
    TransferCreated(Transfer),
    /// A transfer batch completed, and with it this transfer, pending until now.
    TransferCompleted(Transfer),
}

/// Where `state` sends events; cloning shares the queue.
#[derive(Clone)]
pub struct Notifier {
    tx: UnboundedSender<SimEvent>,
    queued: Arc<AtomicUsize>,
}

impl Notifier {
    /// Queue an event; never blocks.
    pub fn send(&self, event: SimEvent) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(event).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Where a message's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Being attempted, or waiting for the next attempt.
    Pending,
    /// Some attempt got a 2xx.
    Delivered,
    /// Every attempt of the schedule failed.
    Failed,
}

/// One webhook message and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    /// The `svix-id`, the same on every attempt.
    pub id: String,
    /// `flow.updated`, `transfer.updated`, `transfer.completed` (the last has no `event` field
    /// in its body, as documented).
    pub event_type: String,
    pub body: serde_json::Value,
    /// Attempts made, not counting a duplicate send.
    pub attempts: u32,
    /// Per attempt: the HTTP status, or `None` for a timeout or connection error.
    pub statuses: Vec<Option<u16>>,
    pub status: DeliveryStatus,
    /// The `webhook_duplicate_rate` fault sent it once more after its success.
    pub duplicated: bool,
}

/// The simulator's webhook sender state (present only when `webhook_url` is set).
pub struct Outbox {
    url: String,
    verifier: Result<Verifier, WebhookError>,
    notifier: Notifier,
    rx: Mutex<Option<UnboundedReceiver<SimEvent>>>,
    records: Mutex<Vec<DeliveryRecord>>,
    rng: Mutex<StdRng>,
    /// Woken whenever a message stops being pending.
    settled: tokio::sync::Notify,
}

struct Message {
    idx: usize,
    id: String,
    body: Vec<u8>,
}

impl Outbox {
    pub fn new(url: String, secret: Option<&str>, seed: u64) -> Outbox {
        let (tx, rx) = unbounded_channel();
        Outbox {
            url,
            verifier: Verifier::new(secret.unwrap_or(DEFAULT_WEBHOOK_SECRET)),
            notifier: Notifier {
                tx,
                queued: Arc::new(AtomicUsize::new(0)),
            },
            rx: Mutex::new(Some(rx)),
            records: Mutex::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x7765_6268_6f6f_6b73)),
            settled: tokio::sync::Notify::new(),
        }
    }

    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    pub fn records(&self) -> Vec<DeliveryRecord> {
        self.records.lock().expect("records lock").clone()
    }

    /// Events not yet turned into messages plus messages still pending.
    pub fn pending(&self) -> usize {
        let pending = self
            .records()
            .iter()
            .filter(|r| r.status == DeliveryStatus::Pending)
            .count();
        pending + self.notifier.queued.load(Ordering::SeqCst)
    }

    /// Wait until nothing is pending (every event delivered or given up on).
    pub async fn idle(&self) {
        loop {
            let woken = self.settled.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            woken.await;
        }
    }

    fn draw(&self, rate: f64) -> bool {
        rate > 0.0 && self.rng.lock().expect("rng lock").random::<f64>() < rate
    }

    fn message(&self, event_type: &str, body: serde_json::Value) -> Message {
        let id = format!("msg_{}", Uuid::new_v4().simple());
        let mut records = self.records.lock().expect("records lock");
        records.push(DeliveryRecord {
            id: id.clone(),
            event_type: event_type.to_string(),
            body: body.clone(),
            attempts: 0,
            statuses: Vec::new(),
            status: DeliveryStatus::Pending,
            duplicated: false,
        });
        Message {
            idx: records.len() - 1,
            id,
            body: body.to_string().into_bytes(),
        }
    }
}

/// Start the dispatcher and the payee ticker; nothing when webhooks are off or already started.
/// Fails if `webhook_secret` is not a valid `whsec_` secret.
pub fn start(sim: &Sim) -> std::io::Result<Vec<JoinHandle<()>>> {
    let Some(outbox) = sim.inner.webhooks.as_ref() else {
        return Ok(Vec::new());
    };
    if let Err(e) = &outbox.verifier {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("webhook_secret: {e}"),
        ));
    }
    let Some(rx) = outbox.rx.lock().expect("rx lock").take() else {
        return Ok(Vec::new());
    };
    Ok(vec![
        tokio::spawn(dispatch(sim.clone(), rx)),
        tokio::spawn(tick_payees(sim.clone())),
    ])
}

/// Every `payee_tick_ms`, let due payees finish their flows (emitting `flow.updated`).
async fn tick_payees(sim: Sim) {
    let every = Duration::from_millis(sim.config().payee_tick_ms.max(1));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let now = sim.clock().now();
        sim.lock().settle_due(sim.config(), now);
    }
}

async fn dispatch(sim: Sim, mut rx: UnboundedReceiver<SimEvent>) {
    let outbox = sim.inner.webhooks.as_ref().expect("started with an outbox");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(sim.config().webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("webhook HTTP client builds");
    let mut deliveries = JoinSet::new();
    while let Some(event) = rx.recv().await {
        let messages = match event {
            SimEvent::FlowUpdated(flow_id) => {
                vec![outbox.message("flow.updated", flow_updated_webhook(flow_id))]
            }
            SimEvent::TransferCreated(t) | SimEvent::TransferCompleted(t) => {
                let terminal = format!("transfer.{}", t.status);
                let mut m =
                    vec![outbox.message("transfer.updated", transfer_updated_webhook(t.id))];
                if t.status == "completed" || t.status == "failed" {
                    m.push(outbox.message(
                        &terminal,
                        transfer_terminal_webhook(&t, sim.config().amounts_as_strings),
                    ));
                }
                m
            }
        };
        outbox.notifier.queued.fetch_sub(1, Ordering::SeqCst);
        for msg in messages {
            deliveries.spawn(deliver(sim.clone(), client.clone(), msg));
        }
        while deliveries.try_join_next().is_some() {}
    }
}

async fn deliver(sim: Sim, client: reqwest::Client, msg: Message) {
    let outbox = sim.inner.webhooks.as_ref().expect("started with an outbox");
    let mut statuses = Vec::new();
    let mut outcome = DeliveryStatus::Failed;
    let mut duplicated = false;
    for &delay in &sim.config().webhook_retry_delays_ms {
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let status = attempt(&sim, &client, &msg).await;
        statuses.push(status);
        if status.is_some_and(|s| (200..300).contains(&s)) {
            outcome = DeliveryStatus::Delivered;
            if outbox.draw(sim.config().webhook_duplicate_rate) {
                attempt(&sim, &client, &msg).await;
                duplicated = true;
            }
            break;
        }
        let mut records = outbox.records.lock().expect("records lock");
        records[msg.idx].attempts = statuses.len() as u32;
        records[msg.idx].statuses = statuses.clone();
    }
    let mut records = outbox.records.lock().expect("records lock");
    let rec = &mut records[msg.idx];
    rec.attempts = statuses.len() as u32;
    rec.statuses = statuses;
    rec.status = outcome;
    rec.duplicated = duplicated;
    drop(records);
    outbox.settled.notify_waiters();
}

/// One POST; the HTTP status, or `None` on timeout / connection error.
async fn attempt(sim: &Sim, client: &reqwest::Client, msg: &Message) -> Option<u16> {
    let outbox = sim.inner.webhooks.as_ref().expect("started with an outbox");
    let verifier = outbox.verifier.as_ref().expect("checked by start");
    let cfg = sim.config();
    let mut ts = sim.clock().now().timestamp();
    if outbox.draw(cfg.webhook_stale_rate) {
        ts -= 10 * 60;
    }
    let signature = if outbox.draw(cfg.webhook_bad_signature_rate) {
        verifier.sign(&msg.id, ts, b"not the body that was sent")
    } else {
        verifier.sign(&msg.id, ts, &msg.body)
    };
    let resp = client
        .post(&outbox.url)
        .header("svix-id", &msg.id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(msg.body.clone())
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_secret_is_the_documented_one() {
        let v = Verifier::new(DEFAULT_WEBHOOK_SECRET).expect("valid secret");
        let own = Verifier::new(&format!(
            "whsec_{}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                "payrun-sim-webhook-secret"
            )
        ))
        .unwrap();
        assert_eq!(v.sign("msg_x", 1, b"{}"), own.sign("msg_x", 1, b"{}"));
    }
}
