//! Transfer batches in the simulator (`POST /v2/transfer-batches`): what each item makes, the
//! idempotency store items share with single transfers, per-item errors and batch keys. Driven
//! through payrun's own Dots client where the client's view matters (error classes), through raw
//! HTTP where the wire does. Faults, reads and the clock are in `batch_lifecycle.rs`.

use crate::common::{Api, id_of, start};
use payrun::dots::client::{ClientConfig, DotsClient, ErrorClass};
use payrun::dots::retry::ReadRetry;
use payrun::dots::sim::{
    DuplicateKeyMode, ITEM_DUPLICATE_KEY, ITEM_INSUFFICIENT_FUNDS, ITEM_UNKNOWN_USER, SimConfig,
};
use payrun::dots::types::{
    CreateTransferBatch, Page, Transfer, TransferBatchItemRequest, TransferBatchStatus,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

pub(super) fn client(api: &Api, timeout: Duration) -> DotsClient {
    let cfg = api.sim().config();
    DotsClient::new(ClientConfig {
        base_url: api.handle.base_url.clone(),
        client_id: cfg.client_id.clone(),
        api_key: cfg.api_key.clone(),
        timeout,
        connect_timeout: Duration::from_secs(2),
        rate_limit_rps: 0.0,
        read_retry: ReadRetry::default(),
    })
    .expect("client builds")
}

pub(super) fn item(user: Uuid, amount: i64, key: Uuid, tag: &str) -> TransferBatchItemRequest {
    TransferBatchItemRequest {
        amount,
        user_id: user,
        idempotency_key: key,
        tax_exempt: None,
        metadata: Some(json!({ "item": tag })),
    }
}

pub(super) fn batch(items: Vec<TransferBatchItemRequest>) -> CreateTransferBatch {
    CreateTransferBatch {
        items,
        idempotency_key: None,
        metadata: None,
    }
}

pub(super) async fn user(api: &Api, phone: &str) -> Uuid {
    id_of(&api.user(phone).await).parse().unwrap()
}

async fn user_transfers(api: &Api, user: Uuid) -> Vec<Transfer> {
    let (status, page) = api
        .get(&format!("/v2/transfers?user_id={user}&limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    serde_json::from_value::<Page<Transfer>>(page).unwrap().data
}

#[tokio::test]
async fn a_transfer_batch_makes_one_transfer_per_item_seen_in_the_ledger_and_the_users_transfers_with_its_metadata()
 {
    let api = start(SimConfig {
        app_wallet_cents: 10_000,
        ..SimConfig::default()
    })
    .await;
    let (ada, bob) = (
        user(&api, "4155551001").await,
        user(&api, "4155551002").await,
    );
    let keys: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut req = batch(vec![
        item(ada, -1_000, keys[0], "a1"),
        item(bob, -2_000, keys[1], "b1"),
        item(ada, -300, keys[2], "a2"),
    ]);
    req.metadata = Some(json!({ "chunk": "c-1" }));
    let made = client(&api, Duration::from_secs(5))
        .create_transfer_batch(&req)
        .await
        .expect("batch made");
    assert_eq!(made.status_kind(), TransferBatchStatus::Completed);
    assert_eq!(made.metadata, Some(json!({ "chunk": "c-1" })));
    assert_eq!(made.items.len(), 3);
    for (got, sent) in made.items.iter().zip(&req.items) {
        assert_eq!(
            got.idempotency_key,
            Some(sent.idempotency_key),
            "request order"
        );
        assert_eq!((got.user_id, got.amount), (sent.user_id, sent.amount));
        assert_eq!(got.metadata, sent.metadata);
        assert_eq!(got.error, None);
        let id = got.transfer_id.expect("a transfer per item");
        let (status, t) = api.get(&format!("/v2/transfers/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let t: Transfer = serde_json::from_value(t).unwrap();
        assert_eq!(
            (t.user_id, t.amount, &t.metadata),
            (sent.user_id, sent.amount, &sent.metadata)
        );
        assert_eq!(
            (t.status.as_str(), t.kind.as_deref()),
            ("completed", Some("balance"))
        );
    }

    let ledger = api.sim().ledger();
    let rows: Vec<(Option<Uuid>, i64, Option<Value>)> = ledger
        .transfers
        .iter()
        .map(|t| (t.idempotency_key, t.amount, t.metadata.clone()))
        .collect();
    let sent: Vec<(Option<Uuid>, i64, Option<Value>)> = req
        .items
        .iter()
        .map(|i| (Some(i.idempotency_key), i.amount, i.metadata.clone()))
        .collect();
    assert_eq!(rows, sent);
    assert_eq!(ledger.app_wallet, 10_000 - 3_300);
    assert_eq!(ledger.wallet(ada).unwrap().amount, 1_300);
    assert_eq!(ledger.wallet(bob).unwrap().amount, 2_000);

    let ada_list = user_transfers(&api, ada).await;
    let tags: Vec<&Value> = ada_list
        .iter()
        .map(|t| &t.metadata.as_ref().unwrap()["item"])
        .collect();
    assert_eq!(
        tags,
        ["a2", "a1"],
        "newest first, each with its item's metadata"
    );
    assert_eq!(user_transfers(&api, bob).await.len(), 1);
}

#[tokio::test]
async fn item_keys_and_single_transfer_keys_are_one_store_each_a_duplicate_in_the_other() {
    let api = start(SimConfig::default()).await;
    let ada = user(&api, "4155551003").await;
    let (used_single, fresh) = (Uuid::new_v4(), Uuid::new_v4());
    let (status, _) = api
        .transfer(&ada.to_string(), -100, Some(&used_single.to_string()))
        .await;
    assert_eq!(status, StatusCode::OK);

    let dots = client(&api, Duration::from_secs(5));
    let made = dots
        .create_transfer_batch(&batch(vec![
            item(ada, -200, used_single, "dup"),
            item(ada, -300, fresh, "new"),
        ]))
        .await
        .expect("the call succeeds; the duplicate is the item's own error");
    let dup = &made.items[0];
    assert_eq!(dup.transfer_id, None);
    assert_eq!(
        dup.error.as_deref(),
        Some(format!("{ITEM_DUPLICATE_KEY}: {used_single}").as_str())
    );
    assert_eq!(made.items[1].error, None);
    assert!(made.items[1].transfer_id.is_some());

    // A batch item's key is a duplicate for a later single transfer, and for a later batch.
    let (status, err) = api
        .transfer(&ada.to_string(), -300, Some(&fresh.to_string()))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error_code"], "duplicate-idempotency-key");
    let again = dots
        .create_transfer_batch(&batch(vec![item(ada, -300, fresh, "again")]))
        .await
        .unwrap();
    assert!(
        again.items[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with(ITEM_DUPLICATE_KEY)
    );

    let ledger = api.sim().ledger();
    let keys: Vec<Option<Uuid>> = ledger.transfers.iter().map(|t| t.idempotency_key).collect();
    assert_eq!(keys, [Some(used_single), Some(fresh)]);
    assert_eq!(ledger.wallet(ada).unwrap().amount, 400);

    // Past the 24 h window a key is new again, in a batch as in a single transfer.
    api.sim().clock().advance(Duration::from_secs(25 * 3600));
    let later = dots
        .create_transfer_batch(&batch(vec![item(ada, -1, used_single, "later")]))
        .await
        .unwrap();
    assert_eq!(later.items[0].error, None);
}

#[tokio::test]
async fn two_items_with_one_key_in_one_request_are_refused_whole_as_invalid_input() {
    let api = start(SimConfig::default()).await;
    let ada = user(&api, "4155551004").await;
    let key = Uuid::new_v4();
    let body = batch(vec![item(ada, -1, key, "x"), item(ada, -2, key, "y")]);
    let (status, err) = api
        .post("/v2/transfer-batches", serde_json::to_value(&body).unwrap())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error_code"], "invalid-input");
    assert_eq!(
        err["message"],
        "items[1].idempotency_key repeats items[0].idempotency_key"
    );
    // The client reads any refusal naming the key as a possible duplicate (reconcile first):
    // the cautious reading, never a definite "nothing happened" for a key it cannot place.
    let seen = client(&api, Duration::from_secs(5))
        .create_transfer_batch(&body)
        .await
        .unwrap_err();
    assert_eq!(seen.class(), ErrorClass::DuplicateKey, "{seen}");
    let (status, _) = api
        .post("/v2/transfer-batches", json!({ "items": [] }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(api.sim().ledger().transfers.is_empty());
    let (_, page) = api.get("/v2/transfer-batches").await;
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn an_unknown_user_or_short_funds_fail_only_that_item_and_its_key_stays_usable() {
    let api = start(SimConfig {
        app_wallet_cents: 1_000,
        ..SimConfig::default()
    })
    .await;
    let (ada, bob) = (
        user(&api, "4155551005").await,
        user(&api, "4155551006").await,
    );
    let ghost = Uuid::new_v4();
    let keys: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let dots = client(&api, Duration::from_secs(5));
    let made = dots
        .create_transfer_batch(&batch(vec![
            item(ada, -600, keys[0], "paid"),
            item(ghost, -1, keys[1], "nobody"),
            item(ada, -500, keys[2], "short"),
            item(bob, -400, keys[3], "fits"),
        ]))
        .await
        .expect("per-item errors do not fail the call");
    let errors: Vec<Option<&str>> = made.items.iter().map(|i| i.error.as_deref()).collect();
    let unknown = format!("{ITEM_UNKNOWN_USER}: {ghost}");
    assert_eq!(
        errors,
        [
            None,
            Some(unknown.as_str()),
            Some(ITEM_INSUFFICIENT_FUNDS),
            None
        ]
    );
    let paid: Vec<bool> = made.items.iter().map(|i| i.transfer_id.is_some()).collect();
    assert_eq!(paid, [true, false, false, true]);
    let ledger = api.sim().ledger();
    assert_eq!(ledger.transfers.len(), 2);
    assert_eq!(ledger.app_wallet, 0, "debited only for the items paid");
    assert_eq!(ledger.wallet(ada).unwrap().amount, 600);
    assert_eq!(ledger.wallet(bob).unwrap().amount, 400);

    // A refused item left no key behind: once funded, the same key goes through.
    api.sim().fund(500);
    let retried = dots
        .create_transfer_batch(&batch(vec![item(ada, -500, keys[2], "short")]))
        .await
        .unwrap();
    assert_eq!(retried.items[0].error, None);
    assert_eq!(api.sim().ledger().wallet(ada).unwrap().amount, 1_100);
}

#[tokio::test]
async fn a_repeated_batch_key_is_refused_like_a_duplicate_transfer_and_applies_nothing() {
    let api = start(SimConfig::default()).await;
    let ada = user(&api, "4155551007").await;
    let batch_key = Uuid::new_v4();
    let dots = client(&api, Duration::from_secs(5));
    let mut first = batch(vec![item(ada, -10, Uuid::new_v4(), "first")]);
    first.idempotency_key = Some(batch_key);
    dots.create_transfer_batch(&first).await.unwrap();

    let unused = Uuid::new_v4();
    let mut second = batch(vec![item(ada, -20, unused, "second")]);
    second.idempotency_key = Some(batch_key);
    let (status, err) = api
        .post(
            "/v2/transfer-batches",
            serde_json::to_value(&second).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error_code"], "duplicate-idempotency-key");
    let err = dots.create_transfer_batch(&second).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::DuplicateKey, "{err}");
    assert_eq!(api.sim().ledger().transfers.len(), 1);
    // Its item's key was not used: a single transfer with it goes through.
    let (status, _) = api
        .transfer(&ada.to_string(), -20, Some(&unused.to_string()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = api.get("/v2/transfer-batches").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn in_replay_mode_a_repeated_batch_key_returns_the_first_batch_and_a_used_item_key_its_transfer()
 {
    let api = start(SimConfig {
        duplicate_key_mode: DuplicateKeyMode::Replay,
        ..SimConfig::default()
    })
    .await;
    let ada = user(&api, "4155551008").await;
    let dots = client(&api, Duration::from_secs(5));
    let key = Uuid::new_v4();
    let (_, single) = api
        .transfer(&ada.to_string(), -5, Some(&key.to_string()))
        .await;
    let mut req = batch(vec![
        item(ada, -5, key, "replayed"),
        item(ada, -6, Uuid::new_v4(), "new"),
    ]);
    req.idempotency_key = Some(Uuid::new_v4());
    let first = dots.create_transfer_batch(&req).await.unwrap();
    assert_eq!(
        first.items[0].transfer_id.unwrap().to_string(),
        id_of(&single)
    );
    assert_eq!(first.items[0].error, None);
    let again = dots.create_transfer_batch(&req).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(api.sim().ledger().transfers.len(), 2);
}
