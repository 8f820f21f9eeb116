//! The deliverer: sends the outbox's events to the configured endpoints, in the Standard
//! Webhooks format, from `payrun worker` (a watchdog part, `jobs::worker`).
//!
//! Each turn: fan new events out into deliveries (`Store::fan_out_events`), then per endpoint
//! claim due deliveries with a lease and POST each envelope exactly as stored, with
//! `webhook-id` (the event id), `webhook-timestamp` and `webhook-signature`
//! (`webhook::verify::Verifier::sign`, the one implementation that also verifies). A 2xx is
//! delivered; anything else (non-2xx, timeout, no connection) is tried again after the next
//! delay of `events.retry_schedule_secs`, and after the last it is failed.
//!
//! Guarantees: no transaction is open during a request; an outcome is written only while this
//! worker holds the delivery's lease (`events.lease_secs`, longer than a try), so one event is
//! in flight to one endpoint at a time across workers; a worker that dies loses nothing (its
//! leases lapse and the deliveries are claimed again).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::config::EventsSettings;
use crate::store::{ClaimedDelivery, Store, StoreError, TryOutcome, now_ms};
use crate::webhook::verify::Verifier;

/// Deliveries claimed per endpoint per turn.
const CLAIM: i64 = 32;
/// Events fanned out per transaction.
const FAN_OUT: i64 = 200;

/// One endpoint, ready to send to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    pub types: Option<Vec<String>>,
    signer: Verifier,
}

/// The deliverer's settings and HTTP client.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub endpoints: Vec<Endpoint>,
    pub schedule_ms: Vec<i64>,
    pub poll: Duration,
    pub lease_ms: i64,
    timeout: Duration,
    http: reqwest::Client,
}

impl Outbound {
    /// From `[events]` (already validated by `config`); `None` when no endpoint is configured.
    pub fn from_settings(s: &EventsSettings) -> anyhow::Result<Option<Arc<Outbound>>> {
        if s.endpoints.is_empty() {
            return Ok(None);
        }
        let endpoints = s
            .endpoints
            .iter()
            .map(|e| {
                Ok(Endpoint {
                    name: e.name.clone(),
                    url: e.url.clone(),
                    types: e.types.clone(),
                    signer: Verifier::new(e.secret.expose())
                        .map_err(|err| anyhow::anyhow!("events endpoint {}: {err}", e.name))?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let timeout = Duration::from_secs(s.timeout_secs.max(1));
        Ok(Some(Arc::new(Outbound {
            endpoints,
            schedule_ms: s
                .retry_schedule_secs
                .iter()
                .map(|d| *d as i64 * 1000)
                .collect(),
            poll: Duration::from_millis(s.poll_ms.max(10)),
            lease_ms: s.lease_secs.max(s.timeout_secs + 1) as i64 * 1000,
            timeout,
            http: reqwest::Client::builder().timeout(timeout).build()?,
        })))
    }

    /// Registers every endpoint (and its type filter) in the store.
    pub async fn register(&self, store: &Store) -> Result<(), StoreError> {
        for e in &self.endpoints {
            store
                .register_endpoint(&e.name, e.types.as_deref(), now_ms())
                .await?;
        }
        Ok(())
    }

    /// When a try that was the `tries`-th (1-based) failed: the next one's time, or `None`.
    pub fn next_attempt_at(&self, tries: i64, now: i64) -> Option<i64> {
        self.schedule_ms.get(tries as usize).map(|d| now + d)
    }

    /// One turn: fan out, then deliver what is due to each endpoint. Returns how many tries.
    pub async fn turn(&self, store: &Store, owner: &str) -> Result<usize, StoreError> {
        let first = self.schedule_ms.first().copied().unwrap_or(0);
        while store
            .fan_out_events(now_ms(), now_ms() + first, FAN_OUT)
            .await? as i64
            == FAN_OUT
        {}
        let turns = self
            .endpoints
            .iter()
            .map(|e| self.deliver_to(store, owner, e));
        let mut tries = 0;
        for r in futures::future::join_all(turns).await {
            tries += r?;
        }
        Ok(tries)
    }

    async fn deliver_to(
        &self,
        store: &Store,
        owner: &str,
        e: &Endpoint,
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let lease_until = now + self.lease_ms;
        let claimed = store
            .claim_deliveries(&e.name, owner, now, lease_until, CLAIM)
            .await?;
        let mut tries = 0;
        for d in &claimed {
            // Out of lease time for one more try: the rest go back untried.
            if now_ms() + self.timeout.as_millis() as i64 + 1000 >= lease_until {
                store.release_deliveries(owner).await?;
                break;
            }
            let outcome = self.send(e, d).await;
            tries += 1;
            if !store.record_delivery(d, owner, now_ms(), &outcome).await? {
                warn!(event_id = %d.event_id, endpoint = %e.name, "delivery outcome not recorded: lease lost");
            }
        }
        Ok(tries)
    }

    /// One try (no transaction open).
    async fn send(&self, e: &Endpoint, d: &ClaimedDelivery) -> TryOutcome {
        let ts = now_ms() / 1000;
        let sig = e.signer.sign(&d.event_id, ts, d.body.as_bytes());
        let res = self
            .http
            .post(&e.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(d.body.clone())
            .send()
            .await;
        let (status, error) = match res {
            Ok(r) if r.status().is_success() => {
                debug!(event_id = %d.event_id, endpoint = %e.name, "event delivered");
                return TryOutcome::Delivered {
                    status: i64::from(r.status().as_u16()),
                };
            }
            Ok(r) => (
                Some(i64::from(r.status().as_u16())),
                format!("HTTP {}", r.status()),
            ),
            Err(err) if err.is_timeout() => (None, "timeout".to_owned()),
            Err(err) if err.is_connect() => (None, "connection failed".to_owned()),
            Err(_) => (None, "request failed".to_owned()),
        };
        let next = self.next_attempt_at(d.attempts + 1, now_ms());
        if next.is_none() {
            warn!(event_id = %d.event_id, endpoint = %e.name, error, "event delivery failed after its last try");
        }
        TryOutcome::Failed {
            status,
            error,
            next_attempt_at: next,
        }
    }
}

/// The deliverer's loop until `stop`: a turn every `events.poll_ms` (at once again after a
/// busy one).
pub async fn run(
    out: Arc<Outbound>,
    store: Store,
    owner: Arc<str>,
    pulse: super::watchdog::Pulse,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    if let Err(e) = out.register(&store).await {
        warn!(error = %e, "registering event endpoints failed");
    }
    loop {
        let busy = match out.turn(&store, &owner).await {
            Ok(n) => {
                pulse.ok();
                n > 0
            }
            Err(e) => {
                warn!(error = %e, "delivering events failed");
                pulse.failed(&e);
                false
            }
        };
        if busy {
            continue;
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(out.poll) => false,
            _ = stop.wait_for(|v| *v) => true,
        };
        if stopping {
            let _ = store.release_deliveries(&owner).await;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_names_exactly_the_event_types() {
        let domain: Vec<&str> = crate::events::EventType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(domain, crate::config::EVENT_TYPES.to_vec());
    }
}
