//! Transfer batches in the simulator over their life: every fault mode on the call as a whole
//! (commit-then-drop included), `GET /v2/transfer-batches[/{id}]` and paging, `pending` then
//! `completed` on the sim clock, and the webhooks of their transfers.

use super::batches::{batch, client, item, user};
use crate::common::{Api, id_of, start};
use payrun::dots::client::ErrorClass;
use payrun::dots::sim::{Fault, SimConfig};
use payrun::dots::types::{TransferBatch, TransferBatchStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn every_fault_applies_to_the_batch_call_as_a_whole() {
    let api = start(SimConfig {
        retry_after_secs: 2,
        ..SimConfig::default()
    })
    .await;
    let ada = user(&api, "4155551009").await;
    let dots = client(&api, Duration::from_millis(300));
    let endpoint = "POST /v2/transfer-batches";
    let two = || {
        batch(vec![
            item(ada, -1, Uuid::new_v4(), "x"),
            item(ada, -2, Uuid::new_v4(), "y"),
        ])
    };

    api.sim().inject(endpoint, Fault::Status(503), 1);
    let err = dots.create_transfer_batch(&two()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
    api.sim().inject(endpoint, Fault::Throttle, 1);
    let err = dots.create_transfer_batch(&two()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert!(
        api.sim().ledger().transfers.is_empty(),
        "nothing made before the handler"
    );

    // Commit-then-drop: every transfer of the batch exists, the client cannot know.
    api.sim().inject(endpoint, Fault::Drop, 1);
    let dropped = two();
    let err = dots.create_transfer_batch(&dropped).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous, "{err}");
    let page = dots.list_transfer_batches_page(None).await.unwrap();
    assert_eq!(page.data.len(), 1);
    let listed = &page.data[0];
    let keys: Vec<Option<Uuid>> = listed.items.iter().map(|i| i.idempotency_key).collect();
    let sent: Vec<Option<Uuid>> = dropped
        .items
        .iter()
        .map(|i| Some(i.idempotency_key))
        .collect();
    assert_eq!(keys, sent);
    for it in &listed.items {
        let t = dots.get_transfer(it.transfer_id.unwrap()).await.unwrap();
        assert_eq!(t.amount, it.amount);
    }
    assert_eq!(api.sim().ledger().transfers.len(), 2);

    // A stall past the client's timeout: ambiguous too, and committed.
    api.sim()
        .inject(endpoint, Fault::Stall(Duration::from_millis(800)), 1);
    let err = dots.create_transfer_batch(&two()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous, "{err}");
    assert_eq!(api.sim().ledger().transfers.len(), 4);
    assert_eq!(api.sim().request_count(endpoint), 4);
}

#[tokio::test]
async fn random_drops_hit_batch_calls_after_the_commit() {
    let api = start(SimConfig {
        drop_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let ada = user(&api, "4155551010").await;
    let err = client(&api, Duration::from_secs(5))
        .create_transfer_batch(&batch(vec![item(ada, -7, Uuid::new_v4(), "x")]))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous, "{err}");
    assert_eq!(api.sim().ledger().transfers.len(), 1);
}

#[tokio::test]
async fn batches_are_fetched_by_id_and_listed_newest_first_in_pages() {
    let api = start(SimConfig::default()).await;
    let ada = user(&api, "4155551011").await;
    let dots = client(&api, Duration::from_secs(5));
    let mut made: Vec<TransferBatch> = Vec::new();
    for n in 0..3 {
        let mut req = batch(vec![item(ada, -1 - n, Uuid::new_v4(), "x")]);
        req.metadata = Some(json!({ "n": n }));
        made.push(dots.create_transfer_batch(&req).await.unwrap());
    }
    for b in &made {
        assert_eq!(&dots.get_transfer_batch(b.id).await.unwrap(), b);
    }
    let missing = dots.get_transfer_batch(Uuid::new_v4()).await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    let (status, _) = api.get("/v2/transfer-batches/not-an-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let ids = |page: &Value| -> Vec<String> {
        page["data"].as_array().unwrap().iter().map(id_of).collect()
    };
    let id = |i: usize| made[i].id.to_string();
    let (_, p1) = api.get("/v2/transfer-batches?limit=2").await;
    assert_eq!(
        (ids(&p1), &p1["has_more"]),
        (vec![id(2), id(1)], &json!(true))
    );
    let (_, p2) = api
        .get(&format!(
            "/v2/transfer-batches?limit=2&starting_after={}",
            id(1)
        ))
        .await;
    assert_eq!((ids(&p2), &p2["has_more"]), (vec![id(0)], &json!(false)));
    let (_, back) = api
        .get(&format!(
            "/v2/transfer-batches?limit=2&ending_before={}",
            id(0)
        ))
        .await;
    assert_eq!(ids(&back), vec![id(2), id(1)]);
    let (status, _) = api
        .get(&format!(
            "/v2/transfer-batches?starting_after={}",
            Uuid::new_v4()
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let all = dots.list_transfer_batches_page(None).await.unwrap();
    assert!(!all.has_more);
    let newest_first: Vec<TransferBatch> = made.into_iter().rev().collect();
    assert_eq!(all.data, newest_first);
    let after = dots
        .list_transfer_batches_page(Some(all.data[0].id))
        .await
        .unwrap();
    assert_eq!(after.data.len(), 2);
}

#[tokio::test]
async fn a_batch_is_pending_then_completed_with_its_transfers_on_the_sim_clock() {
    let api = start(SimConfig {
        transfer_batch_complete_after_secs: 60.0,
        ..SimConfig::default()
    })
    .await;
    let (ada, held) = (
        user(&api, "4155551012").await,
        user(&api, "4155551013").await,
    );
    api.sim().hold_transfers(held);
    let dots = client(&api, Duration::from_secs(5));
    let made = dots
        .create_transfer_batch(&batch(vec![
            item(ada, -10, Uuid::new_v4(), "a"),
            item(held, -20, Uuid::new_v4(), "h"),
        ]))
        .await
        .unwrap();
    assert_eq!(made.status_kind(), TransferBatchStatus::Pending);
    let status_of = |i: usize| {
        let dots = dots.clone();
        let id = made.items[i].transfer_id.unwrap();
        async move { dots.get_transfer(id).await.unwrap().status }
    };
    assert_eq!(
        (status_of(0).await, status_of(1).await),
        ("pending".into(), "pending".into())
    );
    assert_eq!(
        api.sim().ledger().wallet(ada).unwrap().amount,
        10,
        "money moved already"
    );

    api.sim().clock().advance(Duration::from_secs(59));
    assert_eq!(
        dots.get_transfer_batch(made.id).await.unwrap().status,
        "pending"
    );
    api.sim().clock().advance(Duration::from_secs(2));
    assert_eq!(status_of(0).await, "completed");
    assert_eq!(
        status_of(1).await,
        "pending",
        "a held user's transfer waits for release"
    );
    assert_eq!(
        dots.get_transfer_batch(made.id).await.unwrap().status,
        "pending"
    );
    api.sim().release_transfers(held);
    let done = dots.get_transfer_batch(made.id).await.unwrap();
    assert_eq!(done.status_kind(), TransferBatchStatus::Completed);
    let listed = dots.list_transfer_batches_page(None).await.unwrap();
    assert_eq!(listed.data[0].status, "completed");
}

#[tokio::test]
async fn a_later_batch_announces_its_transfers_created_then_completed_by_webhook() {
    let rx = crate::common::webhook::receiver(|| chrono::Utc::now().timestamp(), 0).await;
    let api = crate::common::webhook::sim_to(&rx.url, |c| {
        c.transfer_batch_complete_after_secs = 30.0;
    })
    .await;
    let ada = user(&api, "4155551014").await;
    let made = client(&api, Duration::from_secs(5))
        .create_transfer_batch(&batch(vec![item(ada, -10, Uuid::new_v4(), "a")]))
        .await
        .unwrap();
    let tid = made.items[0].transfer_id.unwrap().to_string();
    crate::common::webhook::idle(&api).await;
    let events = |api: &Api| -> Vec<String> {
        api.sim()
            .webhook_deliveries()
            .iter()
            .filter(|d| d.body.to_string().contains(&tid))
            .map(|d| d.event_type.clone())
            .collect()
    };
    assert_eq!(events(&api), ["transfer.updated"]);
    api.sim().clock().advance(Duration::from_secs(31));
    let (_, t) = api.get(&format!("/v2/transfers/{tid}")).await;
    assert_eq!(t["status"], "completed");
    crate::common::webhook::idle(&api).await;
    assert_eq!(
        events(&api),
        ["transfer.updated", "transfer.updated", "transfer.completed"]
    );
}
