//! Behaviour of the Dots simulator over HTTP: auth, users, flows and simulated payees,
//! transfers and idempotency, pagination, fault injection and the test hooks; transfer batches
//! in `sim_api/batches.rs` and `sim_api/batch_lifecycle.rs`.

mod batch_lifecycle;
mod batches;

use crate::common::{Api, id_of, start, user_body};
use payrun::dots::sim::{DuplicateKeyMode, Fault, SimConfig};
use payrun::dots::types::{Flow, Page, Transfer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn api_requests_without_or_with_wrong_credentials_get_401() {
    let api = start(SimConfig::default()).await;
    let bare = api.http.get(api.url("/v2/flows")).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let body: Value = bare.json().await.unwrap();
    assert_eq!(body["error_code"], "unauthorized");
    let wrong = api
        .http
        .get(api.url("/v2/flows"))
        .basic_auth("sim-client", Some("not-the-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let (ok, _) = api.get("/v2/flows").await;
    assert_eq!(ok, StatusCode::OK);
}

#[tokio::test]
async fn a_user_is_created_once_per_phone_and_unknown_users_are_404() {
    let api = start(SimConfig::default()).await;
    let first = api.user("4155550001").await;
    assert_eq!(first["status"], "unverified");
    assert_eq!(
        first["phone_number"],
        json!({"country_code": "1", "phone_number": "4155550001"})
    );
    assert_eq!(
        first["wallet"],
        json!({"amount": 0, "withdrawable_amount": 0, "credit_balance": 0})
    );
    let again = api.user("4155550001").await;
    assert_eq!(again["id"], first["id"]);
    let other = api.user("4155550002").await;
    assert_ne!(other["id"], first["id"]);

    let (status, got) = api.get(&format!("/v2/users/{}", id_of(&first))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], first["id"]);
    let (status, err) = api.get(&format!("/v2/users/{}", Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error_code"], "no-such-user");
}

#[tokio::test]
async fn user_creation_rejects_bad_fields_naming_the_field() {
    let api = start(SimConfig::default()).await;
    for (field, value) in [
        ("phone_number", json!("415-555")),
        ("country_code", json!("1234")),
        ("email", json!("no-at-sign")),
        ("first_name", json!("")),
        ("last_name", json!("x".repeat(51))),
    ] {
        let mut body = user_body("4155550003");
        body[field] = value;
        let (status, err) = api.post("/v2/users", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(err["error_code"], "invalid-input");
        assert!(err["message"].as_str().unwrap().contains(field), "{err}");
    }
}

#[tokio::test]
async fn flow_creation_rejects_unknown_steps_onboarding_duplicates_and_unknown_users() {
    let api = start(SimConfig::default()).await;
    for steps in [
        json!(["teleport"]),
        json!(["onboarding"]),
        json!(["payout", {"name": "payout"}]),
        json!([]),
    ] {
        let (status, err) = api.post("/v2/flows", json!({ "steps": steps })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{steps}");
        assert_eq!(err["error_code"], "invalid-input");
    }
    let (status, _) = api
        .post(
            "/v2/flows",
            json!({"steps": ["payout"], "user_id": Uuid::new_v4()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, flow) = api
        .post(
            "/v2/flows",
            json!({"steps": ["compliance", {"name": "redirect", "redirect_url": "https://example.com"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(flow["steps"], json!(["compliance", "redirect"]));
    assert_eq!(flow["completed_steps"], json!([]));
    assert_eq!(flow["user_id"], Value::Null);
    assert_eq!(flow["payout_link_id"], Value::Null);
    let link = flow["link"].as_str().unwrap();
    assert!(
        link.starts_with("http://127.0.0.1:") && link.ends_with(&id_of(&flow)),
        "{link}"
    );
    let (status, _) = api.get(&format!("/v2/flows/{}", Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_flow_completes_once_the_clock_passes_complete_after_and_gains_a_user() {
    let api = start(SimConfig::default()).await;
    let (_, flow) = api.post("/v2/flows", json!({"steps": ["payout"]})).await;
    let path = format!("/v2/flows/{}", id_of(&flow));
    let (_, early) = api.get(&path).await;
    let early: Flow = serde_json::from_value(early).unwrap();
    assert!(!early.is_complete() && early.user_id.is_none());

    api.sim().clock().advance(Duration::from_secs(6));
    let (_, done) = api.get(&path).await;
    let done: Flow = serde_json::from_value(done).unwrap();
    assert!(done.is_complete());
    let user_id = done.user_id.expect("onboarding gave the flow a user");
    let (status, _) = api.get(&format!("/v2/users/{user_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(api.sim().ledger().wallet(user_id).is_some());

    // A flow created for an existing user keeps that user.
    let user = api.user("4155550004").await;
    let (_, mine) = api
        .post(
            "/v2/flows",
            json!({"steps": ["manage-payouts"], "user_id": user["id"]}),
        )
        .await;
    api.sim().clock().advance(Duration::from_secs(6));
    let (_, page) = api.get("/v2/flows").await;
    let page: Page<Flow> = serde_json::from_value(page).unwrap();
    let mine = page
        .data
        .iter()
        .find(|f| f.id.to_string() == id_of(&mine))
        .unwrap();
    assert!(mine.is_complete());
    assert_eq!(mine.user_id.unwrap().to_string(), id_of(&user));
}

#[tokio::test]
async fn a_listed_never_complete_payee_keeps_the_flow_open_until_forced() {
    let api = start(SimConfig {
        never_complete_payees: vec!["payee-7".into()],
        ..SimConfig::default()
    })
    .await;
    let (_, stuck) = api
        .post(
            "/v2/flows",
            json!({"steps": ["payout"], "metadata": {"payee_id": "payee-7"}}),
        )
        .await;
    let (_, other) = api
        .post(
            "/v2/flows",
            json!({"steps": ["payout"], "metadata": {"payee_id": "payee-8"}}),
        )
        .await;
    api.sim().clock().advance(DAY);
    let (_, stuck_now) = api.get(&format!("/v2/flows/{}", id_of(&stuck))).await;
    assert_eq!(stuck_now["completed_steps"], json!([]));
    assert_eq!(stuck_now["user_id"], Value::Null);
    let (_, other_now) = api.get(&format!("/v2/flows/{}", id_of(&other))).await;
    assert_eq!(other_now["completed_steps"], json!(["payout"]));

    let resp = api
        .http
        .post(api.hook_url(&format!("/_sim/flows/{}/complete", id_of(&stuck))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let forced: Flow = resp.json().await.unwrap();
    assert!(forced.is_complete() && forced.user_id.is_some());
}

#[tokio::test]
async fn a_transfer_credits_the_user_and_debits_the_app_wallet() {
    let api = start(SimConfig {
        app_wallet_cents: 10_000,
        ..SimConfig::default()
    })
    .await;
    let user = api.user("4155550005").await;
    let (status, t) = api.transfer(&id_of(&user), -1_500, None).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["status"], "completed");
    assert_eq!(t["type"], "balance");
    assert_eq!(t["amount"], json!(-1_500));
    let (_, got) = api.get(&format!("/v2/users/{}", id_of(&user))).await;
    assert_eq!(got["wallet"]["amount"], 1_500);
    assert_eq!(got["wallet"]["withdrawable_amount"], 1_500);

    let (status, back) = api.transfer(&id_of(&user), 500, None).await;
    assert_eq!(status, StatusCode::OK, "{back}");
    let ledger = api.sim().ledger();
    assert_eq!(ledger.app_wallet, 10_000 - 1_000);
    assert_eq!(
        ledger
            .wallet(user["id"].as_str().unwrap().parse().unwrap())
            .unwrap()
            .amount,
        1_000
    );

    let (status, fetched) = api.get(&format!("/v2/transfers/{}", id_of(&t))).await;
    assert_eq!((status, &fetched["id"]), (StatusCode::OK, &t["id"]));
    let (status, _) = api.get(&format!("/v2/transfers/{}", Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.transfer(&Uuid::new_v4().to_string(), -1, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_transfer_beyond_the_app_balance_fails_with_insufficient_funds() {
    let api = start(SimConfig {
        app_wallet_cents: 1_000,
        ..SimConfig::default()
    })
    .await;
    let user = api.user("4155550006").await;
    let (status, err) = api.transfer(&id_of(&user), -1_001, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error_code"], "transaction-insufficient-funds");
    let ledger = api.sim().ledger();
    assert!(ledger.transfers.is_empty());
    assert_eq!(ledger.app_wallet, 1_000);
}

#[tokio::test]
async fn a_duplicate_idempotency_key_is_rejected_within_24h_and_new_after() {
    let api = start(SimConfig::default()).await;
    let user = id_of(&api.user("4155550007").await);
    let key = Uuid::new_v4().to_string();
    let (status, _) = api.transfer(&user, -100, Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    api.sim().clock().advance(Duration::from_secs(23 * 3600));
    let (status, err) = api.transfer(&user, -100, Some(&key)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error_code"], "duplicate-idempotency-key");
    assert_eq!(api.sim().ledger().transfers.len(), 1);

    api.sim().clock().advance(Duration::from_secs(2 * 3600));
    let (status, _) = api.transfer(&user, -100, Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.sim().ledger().transfers.len(), 2);
}

#[tokio::test]
async fn in_replay_mode_a_duplicate_key_returns_the_first_transfer() {
    let api = start(SimConfig {
        duplicate_key_mode: DuplicateKeyMode::Replay,
        ..SimConfig::default()
    })
    .await;
    let user = id_of(&api.user("4155550008").await);
    let key = Uuid::new_v4().to_string();
    let (_, first) = api.transfer(&user, -100, Some(&key)).await;
    let (status, again) = api.transfer(&user, -999, Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    assert_eq!(api.sim().ledger().transfers.len(), 1);
}

#[tokio::test]
async fn transfer_lists_page_newest_first_and_oldest_first_with_reverse_order() {
    let api = start(SimConfig::default()).await;
    let user = id_of(&api.user("4155550009").await);
    let other = id_of(&api.user("4155550010").await);
    let mut made = Vec::new();
    for i in 1..=5 {
        made.push(id_of(&api.transfer(&user, -i, None).await.1));
    }
    api.transfer(&other, -1, None).await;

    let base = format!("/v2/transfers?user_id={user}&limit=2");
    let (_, p1) = api.get(&base).await;
    let p1: Page<Transfer> = serde_json::from_value(p1).unwrap();
    let ids = |p: &Page<Transfer>| p.data.iter().map(|t| t.id.to_string()).collect::<Vec<_>>();
    assert_eq!(
        (ids(&p1), p1.has_more),
        (vec![made[4].clone(), made[3].clone()], true)
    );
    let (_, p2) = api.get(&format!("{base}&starting_after={}", made[3])).await;
    let p2: Page<Transfer> = serde_json::from_value(p2).unwrap();
    assert_eq!(
        (ids(&p2), p2.has_more),
        (vec![made[2].clone(), made[1].clone()], true)
    );
    let (_, p3) = api.get(&format!("{base}&starting_after={}", made[1])).await;
    let p3: Page<Transfer> = serde_json::from_value(p3).unwrap();
    assert_eq!((ids(&p3), p3.has_more), (vec![made[0].clone()], false));
    let (_, back) = api.get(&format!("{base}&ending_before={}", made[1])).await;
    let back: Page<Transfer> = serde_json::from_value(back).unwrap();
    assert_eq!(ids(&back), vec![made[3].clone(), made[2].clone()]);

    let (_, asc) = api.get(&format!("{base}&reverse_order=true")).await;
    let asc: Page<Transfer> = serde_json::from_value(asc).unwrap();
    assert_eq!(
        (ids(&asc), asc.has_more),
        (vec![made[0].clone(), made[1].clone()], true)
    );

    let (_, all) = api.get("/v2/transfers?limit=1000").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 6);
    assert_eq!(all["has_more"], false);
}

#[tokio::test]
async fn an_unknown_or_malformed_cursor_is_rejected() {
    let api = start(SimConfig::default()).await;
    for path in [
        format!("/v2/transfers?starting_after={}", Uuid::new_v4()),
        format!("/v2/flows?ending_before={}", Uuid::new_v4()),
        "/v2/users?starting_after=not-an-id".to_string(),
    ] {
        let (status, err) = api.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(err["error_code"], "invalid-input");
    }
}

#[tokio::test]
async fn an_injected_500_answers_before_any_state_change() {
    let api = start(SimConfig::default()).await;
    let user = id_of(&api.user("4155550011").await);
    api.sim()
        .inject("POST /v2/transfers", Fault::Status(500), 1);
    let (status, _) = api.transfer(&user, -100, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(api.sim().ledger().transfers.is_empty());
    let (status, _) = api.transfer(&user, -100, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.sim().request_count("POST /v2/transfers"), 2);
}

#[tokio::test]
async fn an_injected_throttle_answers_429_with_retry_after() {
    let api = start(SimConfig {
        retry_after_secs: 3,
        ..SimConfig::default()
    })
    .await;
    api.sim().inject("GET /v2/flows/{id}", Fault::Throttle, 1);
    let resp = api
        .request(Method::GET, &format!("/v2/flows/{}", Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(api.sim().request_count("GET /v2/flows/{id}"), 1);
}

#[tokio::test]
async fn the_rate_limit_throttles_requests_beyond_it_within_a_second() {
    let api = start(SimConfig {
        rate_limit: Some(2),
        ..SimConfig::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(api.get("/v2/flows").await.0);
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
}

#[tokio::test]
async fn a_dropped_response_breaks_the_client_yet_the_transfer_is_committed_once() {
    let api = start(SimConfig::default()).await;
    let user = id_of(&api.user("4155550012").await);
    api.sim().inject("POST /v2/transfers", Fault::Drop, 1);
    let key = Uuid::new_v4();
    let resp = api
        .request(Method::POST, "/v2/transfers")
        .json(&json!({"amount": -250, "user_id": user, "idempotency_key": key}))
        .send()
        .await
        .expect("the status line and headers arrive");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.json::<Value>().await.is_err(),
        "the body must break off before it is complete"
    );
    let ledger = api.sim().ledger();
    assert_eq!(ledger.transfers.len(), 1);
    assert_eq!(ledger.transfers[0].idempotency_key, Some(key));
    assert_eq!(ledger.transfers[0].amount, -250);
}

#[tokio::test]
async fn a_stalled_response_times_out_the_client_after_the_commit() {
    let api = start(SimConfig::default()).await;
    let user = id_of(&api.user("4155550013").await);
    api.sim().inject(
        "POST /v2/transfers",
        Fault::Stall(Duration::from_millis(500)),
        1,
    );
    let res = api
        .request(Method::POST, "/v2/transfers")
        .timeout(Duration::from_millis(100))
        .json(&json!({"amount": -1, "user_id": user}))
        .send()
        .await;
    assert!(res.is_err_and(|e| e.is_timeout()));
    assert_eq!(api.sim().ledger().transfers.len(), 1);
}

#[tokio::test]
async fn the_ledger_route_lists_transfers_users_and_the_app_wallet() {
    let api = start(SimConfig {
        app_wallet_cents: 5_000,
        ..SimConfig::default()
    })
    .await;
    let user = id_of(&api.user("4155550014").await);
    let key = Uuid::new_v4().to_string();
    let (_, t) = api.transfer(&user, -700, Some(&key)).await;
    let ledger: Value = api
        .http
        .get(api.hook_url("/_sim/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &ledger["transfers"][0];
    let mut keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "amount",
            "created",
            "id",
            "idempotency_key",
            "metadata",
            "status",
            "user_id"
        ]
    );
    assert_eq!(
        (row["id"].clone(), row["amount"].clone()),
        (t["id"].clone(), json!(-700))
    );
    assert_eq!(row["idempotency_key"], json!(key));
    assert!(row["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ledger["users"][0]["id"], json!(user));
    assert_eq!(ledger["users"][0]["wallet"]["amount"], 700);
    assert_eq!(ledger["app_wallet"], 4_300);
}

#[tokio::test]
async fn the_clock_hook_advances_the_sim_clock() {
    let api = start(SimConfig::default()).await;
    let before = api.sim().clock().now();
    let resp = api
        .http
        .post(api.hook_url("/_sim/clock/advance"))
        .json(&json!({"secs": 90000}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(api.sim().clock().now() - before >= chrono::Duration::seconds(90000));
}

#[tokio::test]
async fn amounts_can_be_sent_as_strings_and_still_decode() {
    let api: Api = start(SimConfig {
        amounts_as_strings: true,
        ..SimConfig::default()
    })
    .await;
    let user = id_of(&api.user("4155550015").await);
    let (_, t) = api.transfer(&user, -1000, None).await;
    assert_eq!(t["amount"], json!("-1000"));
    assert!(t["created"].as_str().unwrap().ends_with('Z'));
    let decoded: Transfer = serde_json::from_value(t).unwrap();
    assert_eq!(decoded.amount, -1000);
}

#[tokio::test]
async fn concurrent_creates_with_one_key_commit_one_transfer() {
    let api = start(SimConfig::default()).await;
    let user = id_of(&api.user("4155550016").await);
    let key = Uuid::new_v4().to_string();
    let calls = (0..8).map(|_| api.transfer(&user, -10, Some(&key)));
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1);
    assert_eq!(api.sim().ledger().transfers.len(), 1);
}
