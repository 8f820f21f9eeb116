//! The worker's watchdog: a worker process that cannot work says so and exits.
//!
//! Owns: the liveness of each part of `payrun worker` — the apalis queue worker, the poller,
//! the feeder, the pruner, the schedule crons and any probe task — and what the process does
//! when one of them dies or stalls. Each part runs as a *component* started with
//! [`Watchdog::spawn`], which hands it a [`Pulse`] to report progress (`ok`) and store failures
//! (`failed`) on.
//!
//! Guarantees:
//! - a component whose future ends before shutdown is dead: it is reported at once (`/healthz`
//!   503 under `worker.<component>`, an ERROR line naming it and the cause) and [`Watchdog::watch`]
//!   returns [`WatchdogExit`] right away — a dead apalis worker never comes back by itself (on a
//!   full disk its fetch fails once and it stops: "fetch_next failed -> Dead");
//! - a component that makes no progress, or whose calls keep failing, for longer than its bound
//!   (`worker.stall_secs`) is stalled: reported at once, cleared if it recovers, and the watch
//!   ends in [`WatchdogExit`] if it is still stalled `worker.stall_exit_secs` later;
//! - the decision is [`judge`] and [`must_exit`], pure functions of timestamps (table-tested);
//!   the loop in [`Watchdog::watch`] only samples the clock and carries it out.
//!
//! The worker (`jobs::worker::run`) turns a `WatchdogExit` into an error, so the process exits
//! with status 1 (`app::exit::FAILED`) and a supervisor restarts it. Nothing it held stays
//! claimed for long: leases lapse after `worker.lease_secs`, and the next worker's start-up
//! drops every queue claim no queued job stands behind (`Store::drop_claims_without_job`); the
//! dead worker's own jobs come back from apalis once its heartbeat lapses, find the leases
//! still held, and hand their items back to be fed when the leases lapse
//! (`Store::hand_back_busy`).

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::health::Health;
use crate::store::now_ms;

/// How often the watchdog looks at its components.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// How a component shows it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It reports progress at least every `every_ms` (a loop turn, a heartbeat): silence for
    /// longer than its bound is a stall (it hangs), and so are failures that last that long.
    Beats { every_ms: i64 },
    /// It works in sparse turns (a cron tick): only failures lasting longer than the bound are
    /// a stall.
    Turns,
}

/// What a component reported, sampled at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// When it started (unix ms).
    pub started_ms: i64,
    /// Its last progress (unix ms; 0 = none yet).
    pub ok_ms: i64,
    /// Since when its calls fail without a success in between (unix ms; 0 = not failing).
    pub failing_since_ms: i64,
    /// The last failure, for the report.
    pub error: Option<String>,
    /// Why its future ended, if it ended.
    pub ended: Option<String>,
}

/// The state of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// No progress, or failing, for longer than its bound.
    Stalled(String),
    /// Its future ended before shutdown.
    Dead(String),
}

/// The bound after which a component is stalled: `stall_ms`, and never under three beats.
pub fn bound_ms(liveness: Liveness, stall_ms: i64) -> i64 {
    match liveness {
        Liveness::Beats { every_ms } => stall_ms.max(3 * every_ms),
        Liveness::Turns => stall_ms,
    }
}

/// Judges one component at `now` (unix ms).
pub fn judge(o: &Observed, liveness: Liveness, now: i64, stall_ms: i64) -> Verdict {
    let bound = bound_ms(liveness, stall_ms);
    let secs = |ms: i64| ms / 1000;
    if let Some(why) = &o.ended {
        return Verdict::Dead(why.clone());
    }
    if o.failing_since_ms > 0 && now - o.failing_since_ms > bound {
        let error = o.error.as_deref().unwrap_or("unknown error");
        return Verdict::Stalled(format!(
            "failing for {} s: {error}",
            secs(now - o.failing_since_ms)
        ));
    }
    if let Liveness::Beats { .. } = liveness {
        let last = o.ok_ms.max(o.started_ms);
        if now - last > bound {
            return Verdict::Stalled(format!("no progress for {} s", secs(now - last)));
        }
    }
    Verdict::Healthy
}

/// Whether the process must exit: a dead component at once; a stalled one reported since
/// `reported_ms` once it has stayed so `exit_after_ms`.
pub fn must_exit(
    verdict: &Verdict,
    reported_ms: Option<i64>,
    now: i64,
    exit_after_ms: i64,
) -> bool {
    match verdict {
        Verdict::Healthy => false,
        Verdict::Dead(_) => true,
        Verdict::Stalled(_) => reported_ms.is_some_and(|since| now - since >= exit_after_ms),
    }
}

#[derive(Debug, Default)]
struct PulseState {
    started_ms: AtomicI64,
    ok_ms: AtomicI64,
    failing_since_ms: AtomicI64,
    error: Mutex<Option<String>>,
    ended: Mutex<Option<String>>,
}

/// Where a component reports its progress; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Pulse(Arc<PulseState>);

impl Pulse {
    fn new(now: i64) -> Pulse {
        let p = Pulse::default();
        p.0.started_ms.store(now, Ordering::Relaxed);
        p
    }

    /// It made progress (a successful turn, store round-trip or heartbeat).
    pub fn ok(&self) {
        self.0.ok_ms.store(now_ms(), Ordering::Relaxed);
        self.0.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// A call failed (store errors are redacted: no secrets).
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let _ = self.0.failing_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        *lock(&self.0.error) = Some(error.to_string());
    }

    /// A failure worth naming when the process exits, that does not by itself make the
    /// component failing (e.g. one item job's store error while apalis still beats).
    pub fn noted(&self, error: &dyn std::fmt::Display) {
        *lock(&self.0.error) = Some(error.to_string());
    }

    fn end(&self, why: String) {
        *lock(&self.0.ended) = Some(why);
    }

    fn observe(&self) -> Observed {
        Observed {
            started_ms: self.0.started_ms.load(Ordering::Relaxed),
            ok_ms: self.0.ok_ms.load(Ordering::Relaxed),
            failing_since_ms: self.0.failing_since_ms.load(Ordering::Relaxed),
            error: lock(&self.0.error).clone(),
            ended: lock(&self.0.ended).clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the watchdog stopped the worker.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the worker's {component} {state}: {reason}; exiting so that a supervisor restarts it")]
pub struct WatchdogExit {
    pub component: String,
    /// "died" or "stalled".
    pub state: &'static str,
    pub reason: String,
}

struct Component {
    name: String,
    liveness: Liveness,
    pulse: Pulse,
    /// When its problem was reported (unix ms).
    reported_ms: Option<i64>,
}

/// Runs the worker's components and watches them. See the module docs.
pub struct Watchdog {
    health: Health,
    stall_ms: i64,
    exit_after_ms: i64,
    stop: watch::Receiver<bool>,
    components: Vec<Component>,
    tasks: Vec<JoinHandle<()>>,
}

impl Watchdog {
    /// A watchdog reporting on `health`; `stop` turns true when the worker shuts down (a
    /// component ending after that is not dead).
    pub fn new(
        health: Health,
        settings: &crate::config::WorkerSettings,
        stop: watch::Receiver<bool>,
    ) -> Watchdog {
        Watchdog {
            health,
            stall_ms: settings.stall_secs.max(1) as i64 * 1000,
            exit_after_ms: settings.stall_exit_secs as i64 * 1000,
            stop,
            components: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Spawns the component `name` (reported as `worker.<name>`): `start` gets its pulse and
    /// returns its future, which should run until shutdown.
    pub fn spawn<F, Fut, E>(&mut self, name: impl Into<String>, liveness: Liveness, start: F)
    where
        F: FnOnce(Pulse) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let pulse = Pulse::new(now_ms());
        let fut = start(pulse.clone());
        let (stop, ended) = (self.stop.clone(), pulse.clone());
        self.tasks.push(tokio::spawn(async move {
            let outcome = fut.await;
            if !*stop.borrow() {
                ended.end(match outcome {
                    Ok(()) => "it stopped".into(),
                    Err(e) => crate::text::printable_lines(&e.to_string()).into_owned(),
                });
            }
        }));
        self.components.push(Component {
            name: name.into(),
            liveness,
            pulse,
            reported_ms: None,
        });
    }

    /// Watches until shutdown (`Ok`) or until a component dies or stays stalled (`Err`).
    pub async fn watch(&mut self) -> Result<(), WatchdogExit> {
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = stop.wait_for(|v| *v) => return Ok(()),
            }
            self.check(now_ms())?;
        }
    }

    fn check(&mut self, now: i64) -> Result<(), WatchdogExit> {
        let mut exit = None;
        for c in &mut self.components {
            let source = format!("worker.{}", c.name);
            let verdict = judge(&c.pulse.observe(), c.liveness, now, self.stall_ms);
            let (state, reason) = match &verdict {
                Verdict::Healthy => {
                    if c.reported_ms.take().is_some() {
                        self.health.clear(&source);
                        info!(component = %c.name, "worker component recovered");
                    }
                    continue;
                }
                Verdict::Stalled(r) => ("stalled", r),
                Verdict::Dead(r) => ("died", r),
            };
            self.health
                .report(&source, format!("{state}: {reason}"), now);
            if c.reported_ms.is_none() {
                c.reported_ms = Some(now);
                error!(component = %c.name, %reason, "worker component {state}");
            }
            if exit.is_none() && must_exit(&verdict, c.reported_ms, now, self.exit_after_ms) {
                exit = Some(WatchdogExit {
                    component: c.name.clone(),
                    state,
                    reason: reason.clone(),
                });
            }
        }
        let Some(exit) = exit else { return Ok(()) };
        // What each part last failed on: the cause may show elsewhere than where it struck
        // (a full disk fails item jobs first, then leaves the database locked).
        let seen: Vec<String> = self
            .components
            .iter()
            .filter_map(|c| Some(format!("{}: {}", c.name, c.pulse.observe().error?)))
            .collect();
        error!(last_errors = %seen.join("; "), "{exit}");
        Err(exit)
    }

    /// Waits for every component to end (after shutdown was signalled), at most `bound` if
    /// given; returns whether they all ended.
    pub async fn join(self, bound: Option<Duration>) -> bool {
        let all = futures::future::join_all(self.tasks);
        match bound {
            None => {
                all.await;
                true
            }
            Some(b) => tokio::time::timeout(b, all).await.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: i64 = 60_000;
    const EXIT: i64 = 30_000;
    const BEATS: Liveness = Liveness::Beats { every_ms: 100 };

    fn obs(ok_ms: i64, failing_since_ms: i64, ended: Option<&str>) -> Observed {
        Observed {
            started_ms: 1_000,
            ok_ms,
            failing_since_ms,
            error: (failing_since_ms > 0).then(|| "database or disk is full".into()),
            ended: ended.map(Into::into),
        }
    }

    #[test]
    fn a_component_is_judged_dead_stalled_or_healthy_and_the_process_exits_within_the_bounds() {
        // (what it reported, liveness, now, reported since) -> (verdict kind, exit?)
        type Case = (Observed, Liveness, i64, Option<i64>, &'static str, bool);
        let cases: &[Case] = &[
            // Beating steadily.
            (obs(99_000, 0, None), BEATS, 100_000, None, "healthy", false),
            // Just started, no beat yet, within the bound.
            (obs(0, 0, None), BEATS, 60_000, None, "healthy", false),
            // Silent past the bound: it hangs.
            (obs(10_000, 0, None), BEATS, 70_001, None, "stalled", false),
            // ... and still so exit_after later.
            (
                obs(10_000, 0, None),
                BEATS,
                100_001,
                Some(70_001),
                "stalled",
                true,
            ),
            // Failing, but not yet for the bound.
            (
                obs(19_000, 20_000, None),
                BEATS,
                79_000,
                None,
                "healthy",
                false,
            ),
            // Failing for longer than the bound.
            (
                obs(19_000, 20_000, None),
                BEATS,
                80_001,
                None,
                "stalled",
                false,
            ),
            // Reported, not yet exit_after ago; then exit_after ago.
            (
                obs(19_000, 20_000, None),
                BEATS,
                110_000,
                Some(80_001),
                "stalled",
                false,
            ),
            (
                obs(19_000, 20_000, None),
                BEATS,
                110_001,
                Some(80_001),
                "stalled",
                true,
            ),
            // It recovered: healthy again, no exit.
            (
                obs(110_000, 0, None),
                BEATS,
                110_500,
                Some(80_001),
                "healthy",
                false,
            ),
            // A sparse component (cron) is not stalled by silence ...
            (
                obs(0, 0, None),
                Liveness::Turns,
                10_000_000,
                None,
                "healthy",
                false,
            ),
            // ... only by failures lasting the bound.
            (
                obs(0, 20_000, None),
                Liveness::Turns,
                80_001,
                None,
                "stalled",
                false,
            ),
            // Dead: exit at once, whatever else it reported.
            (
                obs(99_000, 0, Some("fetch failed")),
                BEATS,
                100_000,
                None,
                "dead",
                true,
            ),
            // A slow beat (heartbeat every 30 s) gets three beats before it counts as silent.
            (
                obs(10_000, 0, None),
                Liveness::Beats { every_ms: 30_000 },
                95_000,
                None,
                "healthy",
                false,
            ),
            (
                obs(10_000, 0, None),
                Liveness::Beats { every_ms: 30_000 },
                100_001,
                None,
                "stalled",
                false,
            ),
        ];
        for (i, (o, liveness, now, reported, kind, exit)) in cases.iter().enumerate() {
            let v = judge(o, *liveness, *now, STALL);
            let got = match &v {
                Verdict::Healthy => "healthy",
                Verdict::Stalled(_) => "stalled",
                Verdict::Dead(_) => "dead",
            };
            assert_eq!(got, *kind, "case {i}: {v:?}");
            assert_eq!(
                must_exit(&v, *reported, *now, EXIT),
                *exit,
                "case {i}: {v:?}"
            );
        }
    }

    #[test]
    fn a_stall_names_what_keeps_failing() {
        let v = judge(&obs(19_000, 20_000, None), BEATS, 90_000, STALL);
        assert_eq!(
            v,
            Verdict::Stalled("failing for 70 s: database or disk is full".into())
        );
    }
}
