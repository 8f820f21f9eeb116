//! `payrun events list` and `payrun events replay` through the real binary: a submitted
//! batch's `batch.created` event is listed in `--json`; replaying it exits 0; an unknown id or
//! a bad `--since` exits 2.

use serde_json::Value;

use crate::common::app::*;

on_both_backends!(events_list_shows_a_batch_created_event_and_replay_refuses_an_unknown_id);

async fn events_list_shows_a_batch_created_event_and_replay_refuses_an_unknown_id(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    app.known_payee("e1", "5550701").await;
    let batch = app
        .batch(&format!("{HEADER}{}", known_payee_row("e1", "3.00")))
        .await;
    let (code, out, err) = payrun(
        &app,
        &["events", "list", "--batch", &batch.to_string(), "--json"],
    );
    assert_eq!(code, 0, "events list: {err}");
    let list: Vec<Value> = serde_json::from_str(&out).expect("events list --json is a JSON array");
    let created = list
        .iter()
        .find(|e| e["type"] == "batch.created")
        .unwrap_or_else(|| panic!("no batch.created in {out}"));
    assert_eq!(created["batch_id"], batch.to_string().as_str());
    let id = created["id"].as_str().expect("an id");

    let (code, out, err) = payrun(&app, &["events", "replay", id]);
    assert_eq!(code, 0, "replay: {err}");
    assert!(out.starts_with("1 events replayed"), "{out}");

    let (code, _, err) = payrun(&app, &["events", "replay", "evt_nosuchevent"]);
    assert_eq!(code, 2, "an unknown id is bad input: {err}");
    assert!(err.contains("no event"), "{err}");
    let (code, _, err) = payrun(&app, &["events", "replay", "--since", "yesterday"]);
    assert_eq!(code, 2, "a bad --since is bad input: {err}");
}
