//! Fault decisions for API requests: the per-second rate limit, faults injected by tests, and
//! random faults drawn from a seeded RNG. Also counts requests per endpoint.
//!
//! Guarantees: injected faults are consumed first-in first-out, exactly one per request to the
//! named endpoint, before any random draw; random draws come from one `StdRng` seeded with
//! `SimConfig::seed`, so a run with the same seed and the same request order gets the same
//! faults. Nothing here touches simulated business state: a fault decided *before* the handler
//! (429, 5xx) means no state change at all.

use super::config::{Fault, SimConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The endpoints whose responses `drop_rate` loses after the commit: those that move money.
const DROPPABLE: [&str; 2] = ["POST /v2/transfers", "POST /v2/transfer-batches"];

/// What to do with one API request, decided before its handler runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Answer 429 with `Retry-After` without running the handler.
    Throttle,
    /// Answer this 5xx status without running the handler.
    Status(u16),
    /// Run the handler, then act on the response as `post` says.
    Run { post: Option<Fault> },
}

#[derive(Default)]
struct Counters {
    injected: HashMap<String, VecDeque<Fault>>,
    requests: HashMap<String, u64>,
    window: VecDeque<Instant>,
}

/// Fault bookkeeping shared by all requests.
pub struct Faults {
    counters: Mutex<Counters>,
    rng: Mutex<StdRng>,
}

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults {
            counters: Mutex::new(Counters::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Queue `fault` for the next `times` requests to `endpoint`.
    pub fn inject(&self, endpoint: &str, fault: Fault, times: usize) {
        let mut c = self.counters.lock().expect("faults lock");
        let q = c.injected.entry(endpoint.to_string()).or_default();
        q.extend(std::iter::repeat_n(fault, times));
    }

    /// Count one request to `endpoint`.
    pub fn count(&self, endpoint: &str) {
        let mut c = self.counters.lock().expect("faults lock");
        *c.requests.entry(endpoint.to_string()).or_default() += 1;
    }

    pub fn request_count(&self, endpoint: &str) -> u64 {
        let c = self.counters.lock().expect("faults lock");
        c.requests.get(endpoint).copied().unwrap_or(0)
    }

    /// Decide the fate of one authenticated request to `endpoint`, in the documented order:
    /// rate limit, injected fault, random throttle, random 5xx, random stall, random drop.
    pub fn plan(&self, cfg: &SimConfig, endpoint: &str) -> Plan {
        {
            let mut c = self.counters.lock().expect("faults lock");
            if let Some(limit) = cfg.rate_limit {
                let now = Instant::now();
                while c
                    .window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
                {
                    c.window.pop_front();
                }
                if c.window.len() >= limit as usize {
                    return Plan::Throttle;
                }
                c.window.push_back(now);
            }
            if let Some(fault) = c.injected.get_mut(endpoint).and_then(|q| q.pop_front()) {
                return match fault {
                    Fault::Throttle => Plan::Throttle,
                    Fault::Status(code) => Plan::Status(code),
                    post @ (Fault::Drop | Fault::Stall(_)) => Plan::Run { post: Some(post) },
                };
            }
        }
        let mut rng = self.rng.lock().expect("rng lock");
        if hit(&mut rng, cfg.throttle_rate) {
            return Plan::Throttle;
        }
        let error_rate = cfg
            .error_rates
            .get(endpoint)
            .copied()
            .unwrap_or(cfg.error_rate);
        if hit(&mut rng, error_rate) {
            return Plan::Status([500, 502, 503][rng.random_range(0..3)]);
        }
        if hit(&mut rng, cfg.stall_rate) {
            let stall = Duration::from_secs_f64(cfg.stall_secs.max(0.0));
            return Plan::Run {
                post: Some(Fault::Stall(stall)),
            };
        }
        if DROPPABLE.contains(&endpoint) && hit(&mut rng, cfg.drop_rate) {
            return Plan::Run {
                post: Some(Fault::Drop),
            };
        }
        Plan::Run { post: None }
    }
}

/// Draw once when `rate` is positive; a rate of 0 consumes no randomness.
fn hit(rng: &mut StdRng, rate: f64) -> bool {
    rate > 0.0 && rng.random::<f64>() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_faults_are_consumed_in_order_then_run_normally() {
        let f = Faults::new(1);
        let cfg = SimConfig::default();
        f.inject("POST /v2/transfers", Fault::Status(503), 1);
        f.inject("POST /v2/transfers", Fault::Drop, 1);
        assert_eq!(f.plan(&cfg, "GET /v2/flows"), Plan::Run { post: None });
        assert_eq!(f.plan(&cfg, "POST /v2/transfers"), Plan::Status(503));
        assert_eq!(
            f.plan(&cfg, "POST /v2/transfers"),
            Plan::Run {
                post: Some(Fault::Drop)
            }
        );
        assert_eq!(f.plan(&cfg, "POST /v2/transfers"), Plan::Run { post: None });
    }

    #[test]
    fn the_rate_limit_throttles_requests_beyond_it() {
        let f = Faults::new(1);
        let cfg = SimConfig {
            rate_limit: Some(2),
            ..SimConfig::default()
        };
        assert_eq!(f.plan(&cfg, "GET /v2/flows"), Plan::Run { post: None });
        assert_eq!(f.plan(&cfg, "GET /v2/flows"), Plan::Run { post: None });
        assert_eq!(f.plan(&cfg, "GET /v2/flows"), Plan::Throttle);
    }

    #[test]
    fn random_faults_follow_the_per_endpoint_rate() {
        let f = Faults::new(7);
        let mut cfg = SimConfig {
            error_rate: 1.0,
            ..SimConfig::default()
        };
        cfg.error_rates.insert("GET /v2/flows".into(), 0.0);
        assert_eq!(f.plan(&cfg, "GET /v2/flows"), Plan::Run { post: None });
        assert!(matches!(
            f.plan(&cfg, "POST /v2/flows"),
            Plan::Status(500 | 502 | 503)
        ));
    }
}
