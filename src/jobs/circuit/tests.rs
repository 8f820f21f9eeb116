//! The circuit's open/close decision, row by row, with time passed in.

use super::*;

const POLICY: Policy = Policy {
    open_after: 3,
    open_after_ms: 1_000,
    probe_base_ms: 100,
    probe_max_ms: 1_000,
};

/// One event in a circuit's life at a time (ms).
#[derive(Debug, Clone, Copy)]
enum Ev {
    Fail(i64),
    Answer(i64),
    ProbeFailed(i64),
}

fn run(kind: Kind, events: &[Ev]) -> (Circuit, Vec<Change>) {
    let mut c = Circuit::new(kind);
    let mut changes = Vec::new();
    for ev in events {
        let ch = match *ev {
            Ev::Fail(t) => c.on_failure(t, "boom", POLICY),
            Ev::Answer(t) => c.on_answer(t),
            Ev::ProbeFailed(t) => {
                c.on_probe_failed(t, "still boom", POLICY);
                None
            }
        };
        changes.extend(ch);
    }
    (c, changes)
}

/// (kind, events, open at the end, changes, next probe)
type Row = (Kind, Vec<Ev>, bool, Vec<Change>, Option<i64>);

#[test]
fn every_row_of_the_open_and_close_decision() {
    use Ev::*;
    use Kind::*;
    let opened = || Change::Opened {
        reason: "boom".into(),
    };
    // (kind, events, open at the end, changes, next probe)
    let rows: Vec<Row> = vec![
        // Credentials open at the first refusal.
        (Credentials, vec![Fail(5)], true, vec![opened()], Some(105)),
        // Unavailability needs 3 in a row...
        (
            DotsUnavailable,
            vec![Fail(0), Fail(10)],
            false,
            vec![],
            None,
        ),
        // ...over at least a second.
        (
            DotsUnavailable,
            vec![Fail(0), Fail(10), Fail(20)],
            false,
            vec![],
            None,
        ),
        (
            DotsUnavailable,
            vec![Fail(0), Fail(10), Fail(20), Fail(1_000)],
            true,
            vec![opened()],
            Some(1_100),
        ),
        // An answer between failures starts the count over (random 5xx never open it).
        (
            DotsUnavailable,
            vec![Fail(0), Fail(500), Answer(600), Fail(700), Fail(1_500)],
            false,
            vec![],
            None,
        ),
        (
            RateLimited,
            vec![Fail(0), Fail(600), Fail(1_200)],
            true,
            vec![opened()],
            Some(1_300),
        ),
        // Failures while open change nothing; an answer closes it.
        (
            Credentials,
            vec![Fail(0), Fail(50), Answer(400)],
            false,
            vec![opened(), Change::Closed { for_ms: 400 }],
            None,
        ),
        // Failed probes back off, doubling, capped.
        (
            Credentials,
            vec![Fail(0), ProbeFailed(100)],
            true,
            vec![opened()],
            Some(300),
        ),
        (
            Credentials,
            vec![
                Fail(0),
                ProbeFailed(100),
                ProbeFailed(300),
                ProbeFailed(700),
            ],
            true,
            vec![opened()],
            Some(1_500),
        ),
        (
            Credentials,
            vec![
                Fail(0),
                ProbeFailed(100),
                ProbeFailed(300),
                ProbeFailed(700),
                ProbeFailed(1_500),
            ],
            true,
            vec![opened()],
            Some(2_500),
        ),
        // A failed probe on a closed circuit changes nothing.
        (DotsUnavailable, vec![ProbeFailed(0)], false, vec![], None),
        // After closing, the count starts over.
        (
            RateLimited,
            vec![Fail(0), Fail(600), Fail(1_200), Answer(1_300), Fail(1_400)],
            false,
            vec![opened(), Change::Closed { for_ms: 100 }],
            None,
        ),
    ];
    for (kind, events, open, changes, probe_at) in rows {
        let (c, got) = run(kind, &events);
        let row = format!("{kind:?} {events:?}");
        assert_eq!(c.is_open(), open, "{row}");
        assert_eq!(got, changes, "{row}");
        assert_eq!(c.probe_at(), probe_at, "{row}");
    }
}

#[test]
fn which_outcome_tells_which_circuit_that_dots_answered() {
    use Kind::*;
    // (the call failed with, the circuit, whether it counts as an answer for it)
    let rows = [
        (None, Credentials, true),
        (None, DotsUnavailable, true),
        (None, RateLimited, true),
        (Some(DotsUnavailable), Credentials, false),
        (Some(DotsUnavailable), RateLimited, false),
        (Some(Credentials), DotsUnavailable, true),
        (Some(Credentials), RateLimited, true),
        (Some(RateLimited), DotsUnavailable, true),
        (Some(RateLimited), Credentials, false),
    ];
    for (failed, kind, expected) in rows {
        assert_eq!(answers(failed, kind), expected, "{failed:?} {kind:?}");
    }
}

#[test]
fn circuits_open_from_observed_calls_and_report_health() {
    let health = Health::new();
    let c = Circuits::new(POLICY, health.clone());
    let refused = DotsError::Permanent {
        status: 401,
        code: Some("unauthorized".into()),
        message: "wrong key".into(),
    };
    c.observe(10, Err(&refused));
    assert!(c.is_open(Kind::Credentials));
    assert_eq!(c.blocked(), Some((Kind::Credentials, 110)));
    let problems = health.problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].source, "circuit.credentials");
    // A timeout tells nothing of the credentials.
    c.observe(20, Err(&DotsError::Ambiguous("timed out".into())));
    assert!(c.is_open(Kind::Credentials));
    c.observe(30, Ok(()));
    assert!(!c.is_open(Kind::Credentials));
    assert!(health.is_healthy());
    assert_eq!(c.blocked(), None);
}
