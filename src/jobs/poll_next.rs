//! When a flow is polled next: one pure decision (no clock, no I/O; the jitter is passed in),
//! carried out by `jobs::poll` and by the flow steps that make a flow.
//!
//! - A new flow is first polled `worker.poll_schedule_secs[0]` after it is made.
//! - A poll that read the flow and found it still open moves the flow one step along the
//!   schedule (its last step repeats): the payee is slow, so we ask less often.
//! - A poll that failed (5xx, 429, timeout, no connection) says nothing about the payee, so it
//!   does not move the flow along the schedule: it is retried after `worker.poll_retry_secs`,
//!   doubled for each failure in a row before it, capped at `worker.poll_retry_max_secs`,
//!   jittered into the upper half of that (pollers do not retry in lockstep after an outage),
//!   and never sooner than Dots' `Retry-After`.

use std::time::Duration;

use crate::config::WorkerSettings;

/// What the poll that just ran (or the step that made the flow) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// The flow was just made.
    New,
    /// The flow was read and is still open.
    Open,
    /// The flow could not be read.
    Failed { retry_after: Option<Duration> },
}

/// Delay until the next poll. `polls`: reads of the flow before this outcome; `errors`: failed
/// polls in a row before this outcome; `jitter` in `0.0..=1.0` (0: the shortest delay allowed).
pub fn next_poll_delay(
    s: &WorkerSettings,
    outcome: PollOutcome,
    polls: i64,
    errors: i64,
    jitter: f64,
) -> Duration {
    match outcome {
        PollOutcome::New => scheduled(&s.poll_schedule_secs, 0),
        PollOutcome::Open => scheduled(&s.poll_schedule_secs, polls.max(0) + 1),
        PollOutcome::Failed { retry_after } => {
            let base = s.poll_retry_secs.max(1) as f64;
            let cap = (s.poll_retry_max_secs as f64).max(base);
            let exp = (base * 2f64.powi(errors.clamp(0, 30) as i32)).min(cap);
            let secs = exp * (0.5 + 0.5 * jitter.clamp(0.0, 1.0));
            Duration::from_secs_f64(secs).max(retry_after.unwrap_or_default())
        }
    }
}

/// The schedule's delay after `reads` reads of the flow (0: the first poll of a new flow).
pub fn scheduled(schedule: &[u64], reads: i64) -> Duration {
    let secs = schedule
        .get(reads.max(0) as usize)
        .or(schedule.last())
        .copied()
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PollOutcome::*;

    fn settings() -> WorkerSettings {
        let mut s = crate::config::Settings::builtin().worker;
        s.poll_schedule_secs = vec![60, 300, 1800, 3600];
        s.poll_retry_secs = 3;
        s.poll_retry_max_secs = 60;
        s
    }

    const fn failed(retry_after_secs: Option<u64>) -> PollOutcome {
        Failed {
            retry_after: match retry_after_secs {
                Some(s) => Some(Duration::from_secs(s)),
                None => None,
            },
        }
    }

    #[test]
    fn the_next_poll_follows_the_schedule_on_reads_and_retries_within_seconds_on_failures() {
        // (outcome, polls before, failures in a row before, jitter, expected seconds)
        let rows: &[(PollOutcome, i64, i64, f64, f64)] = &[
            // A new flow: the schedule's first step, whatever the counters say.
            (New, 0, 0, 0.0, 60.0),
            (New, 7, 3, 1.0, 60.0),
            // Read and still open: one step along the schedule, the last repeating.
            (Open, 0, 0, 0.5, 300.0),
            (Open, 1, 0, 0.5, 1800.0),
            (Open, 2, 0, 0.5, 3600.0),
            (Open, 9, 0, 0.5, 3600.0),
            // An earlier run of failures does not change a read's schedule.
            (Open, 0, 4, 0.5, 300.0),
            // Failed: seconds, not the schedule, however far along the flow is.
            (failed(None), 0, 0, 0.0, 1.5),
            (failed(None), 0, 0, 1.0, 3.0),
            (failed(None), 3, 0, 1.0, 3.0),
            // Failures in a row double the retry, up to the cap.
            (failed(None), 0, 1, 1.0, 6.0),
            (failed(None), 0, 2, 0.0, 6.0),
            (failed(None), 0, 4, 1.0, 48.0),
            (failed(None), 0, 5, 1.0, 60.0),
            (failed(None), 0, 5, 0.0, 30.0),
            (failed(None), 0, 1000, 1.0, 60.0),
            // Dots' Retry-After is honoured when longer, ignored when shorter.
            (failed(Some(20)), 0, 0, 1.0, 20.0),
            (failed(Some(1)), 0, 0, 1.0, 3.0),
            (failed(Some(120)), 0, 9, 1.0, 120.0),
        ];
        let s = settings();
        for (n, &(outcome, polls, errors, jitter, want)) in rows.iter().enumerate() {
            let got = next_poll_delay(&s, outcome, polls, errors, jitter).as_secs_f64();
            assert!(
                (got - want).abs() < 1e-6,
                "row {n}: {outcome:?} polls {polls} errors {errors} jitter {jitter}: {got} s, want {want} s"
            );
        }
    }

    #[test]
    fn a_retry_delay_is_bounded_for_any_settings() {
        let mut s = settings();
        // A zero base still waits (a second), and a cap below the base is the base.
        s.poll_retry_secs = 0;
        s.poll_retry_max_secs = 0;
        let d = next_poll_delay(&s, failed(None), 0, 50, 1.0);
        assert_eq!(d, Duration::from_secs(1));
        // An empty schedule polls every minute.
        s.poll_schedule_secs.clear();
        assert_eq!(
            next_poll_delay(&s, Open, 3, 0, 0.0),
            Duration::from_secs(60)
        );
    }
}
