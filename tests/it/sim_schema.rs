//! The simulator's responses checked against the official Dots OpenAPI spec
//! (`../shared/dots/openapi-v2.yaml`, schemas `flow`, `transfer`, `user` and `app`, and the
//! inline answers of the `/v2/transfer-batches` operations).

use crate::common::{Api, id_of, start};
use jsonschema::{Draft, Validator};
use payrun::dots::sim::SimConfig;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The whole spec, as JSON.
fn spec() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/dots/openapi-v2.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).expect("spec is YAML")
}

/// Load the spec's `components` and turn YAML into JSON Schema the validator accepts.
fn components() -> Value {
    let mut components = spec()["components"].clone();
    assert!(
        components["schemas"].is_object(),
        "spec has components.schemas"
    );
    patch_null_types(&mut components);
    components
}

/// Known spec defect: some `type` lists hold a bare YAML `null` (e.g. `user.compliance.w9`:
/// `type: [object, null]`), which decodes to JSON null instead of the type name "null" and makes
/// the schema invalid. Replace such nulls with "null", which is what the authors meant.
fn patch_null_types(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                for t in types.iter_mut().filter(|t| t.is_null()) {
                    *t = json!("null");
                }
            }
            map.values_mut().for_each(patch_null_types);
        }
        Value::Array(items) => items.iter_mut().for_each(patch_null_types),
        _ => {}
    }
}

/// A validator for `#/components/schemas/{name}`: the root document carries the spec's
/// components, so every `$ref: "#/components/schemas/..."` resolves inside it.
fn validator(components: &Value, name: &str) -> Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": components,
    });
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {name} builds: {e}"))
}

/// A validator for the `200` answer of `method` on `path`, an inline schema whose `$ref`s
/// resolve against the spec's components.
fn response_validator(path: &str, method: &str) -> Validator {
    let spec = spec();
    let mut schema = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        ["schema"]
        .clone();
    assert!(schema.is_object(), "{method} {path} has a 200 JSON schema");
    patch_null_types(&mut schema);
    let Value::Object(mut root) = schema else {
        unreachable!()
    };
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert("components".into(), components());
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .unwrap_or_else(|e| panic!("schema of {method} {path} builds: {e}"))
}

fn assert_valid(v: &Validator, what: &str, instance: &Value) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} violates the spec: {errors:?}\n{instance:#}"
    );
}

fn items(page: &Value) -> &Vec<Value> {
    page["data"].as_array().expect("a list page has data")
}

async fn setup() -> (Api, String) {
    let api = start(SimConfig::default()).await;
    let user = id_of(&api.user("4155550100").await);
    (api, user)
}

#[tokio::test]
async fn flow_responses_match_the_flow_schema() {
    let v = validator(&components(), "flow");
    let (api, user) = setup().await;
    let (_, open) = api
        .post("/v2/flows", json!({"steps": ["payout", "compliance"]}))
        .await;
    assert_valid(&v, "POST /v2/flows", &open);
    let (_, mine) = api
        .post(
            "/v2/flows",
            json!({"steps": [{"name": "manage-payouts"}], "user_id": user, "metadata": {"payee_id": "p1"}}),
        )
        .await;
    assert_valid(&v, "POST /v2/flows with user", &mine);
    api.sim().clock().advance(Duration::from_secs(60));
    let (_, done) = api.get(&format!("/v2/flows/{}", id_of(&open))).await;
    assert!(done["user_id"].is_string(), "{done}");
    assert_valid(&v, "GET /v2/flows/{id}", &done);
    let (_, page) = api.get("/v2/flows").await;
    assert_eq!(items(&page).len(), 2);
    for f in items(&page) {
        assert_valid(&v, "GET /v2/flows item", f);
    }
}

#[tokio::test]
async fn transfer_responses_match_the_transfer_schema() {
    let v = validator(&components(), "transfer");
    let (api, user) = setup().await;
    let (_, credit) = api
        .transfer(&user, -1_000, Some(&uuid::Uuid::new_v4().to_string()))
        .await;
    assert_valid(&v, "POST /v2/transfers", &credit);
    let (_, debit) = api.transfer(&user, 400, None).await;
    assert_valid(&v, "POST /v2/transfers (debit)", &debit);
    let (_, got) = api.get(&format!("/v2/transfers/{}", id_of(&credit))).await;
    assert_valid(&v, "GET /v2/transfers/{id}", &got);
    let (_, page) = api.get(&format!("/v2/transfers?user_id={user}")).await;
    assert_eq!(items(&page).len(), 2);
    for t in items(&page) {
        assert_valid(&v, "GET /v2/transfers item", t);
    }
}

#[tokio::test]
async fn user_responses_match_the_user_schema() {
    let v = validator(&components(), "user");
    let (api, user) = setup().await;
    api.transfer(&user, -250, None).await;
    let (_, got) = api.get(&format!("/v2/users/{user}")).await;
    assert_eq!(got["wallet"]["amount"], 250);
    assert_valid(&v, "GET /v2/users/{id}", &got);
    let (_, created) = api
        .post("/v2/users", crate::common::user_body("4155550101"))
        .await;
    assert_valid(&v, "POST /v2/users", &created);
    let (_, page) = api.get("/v2/users").await;
    for u in items(&page) {
        assert_valid(&v, "GET /v2/users item", u);
    }
}

#[tokio::test]
async fn the_schema_check_rejects_broken_objects() {
    let c = components();
    let (api, user) = setup().await;
    let (_, flow) = api.post("/v2/flows", json!({"steps": ["payout"]})).await;
    let mut bad_flow = flow.clone();
    bad_flow["steps"] = json!(["onboarding"]);
    assert!(!validator(&c, "flow").is_valid(&bad_flow));
    bad_flow = flow;
    bad_flow["created"] = json!("yesterday");
    assert!(
        !validator(&c, "flow").is_valid(&bad_flow),
        "formats are checked"
    );

    let (_, transfer) = api.transfer(&user, -10, None).await;
    let mut bad_transfer = transfer;
    // What the real sandbox sent, and what `amounts_as_strings` reproduces: not the spec's type.
    bad_transfer["amount"] = json!("-10");
    assert!(!validator(&c, "transfer").is_valid(&bad_transfer));

    let (_, got) = api.get(&format!("/v2/users/{user}")).await;
    let mut bad_user = got;
    bad_user["status"] = json!("sleeping");
    assert!(!validator(&c, "user").is_valid(&bad_user));
    let (_, mut bad_user) = api.get(&format!("/v2/users/{user}")).await;
    // `wallet` is a `$ref`, so this also shows references are followed.
    bad_user["wallet"]["amount"] = json!("0");
    assert!(!validator(&c, "user").is_valid(&bad_user));
}

#[tokio::test]
async fn the_app_matches_the_app_schema_and_its_wallet_follows_transfers_and_funding() {
    let v = validator(&components(), "app");
    let api = start(SimConfig {
        app_wallet_cents: 50_000,
        ..SimConfig::default()
    })
    .await;
    let app_id = api.sim().config().app_id;
    let (status, app) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert_eq!(status, 200, "{app}");
    assert_valid(&v, "GET /v2/apps/{app_id}", &app);
    assert_eq!(app["id"], app_id.to_string());
    assert_eq!(app["metrics"]["wallet_balance"], "500.00");
    let user = id_of(&api.user("4155550100").await);
    api.transfer(&user, -12_345, None).await;
    let (_, app) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert_valid(&v, "GET /v2/apps/{app_id} after a transfer", &app);
    assert_eq!(app["metrics"]["wallet_balance"], "376.55");
    assert_eq!(app["metrics"]["money_out"], "123.45");
    assert_eq!(app["metrics"]["connected_users"], 1);
    // The test hook adds to the wallet, unauthenticated like every /_sim route.
    let funded: Value = reqwest::Client::new()
        .post(api.hook_url("/_sim/fund"))
        .json(&json!({"cents": 100_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(funded["app_wallet"], 137_655);
    let (_, app) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert_eq!(app["metrics"]["wallet_balance"], "1376.55");
    let bad = reqwest::Client::new()
        .post(api.hook_url("/_sim/fund"))
        .json(&json!({"cents": "lots"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // Another app id is not found; no credentials, no answer.
    let (status, _) = api.get(&format!("/v2/apps/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, 404);
    let anon = reqwest::Client::new()
        .get(api.url(&format!("/v2/apps/{app_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let mut broken = app.clone();
    broken["metrics"]["wallet_balance"] = json!(1376.55);
    assert!(!v.is_valid(&broken), "wallet_balance must be a string");
}

#[tokio::test]
async fn transfer_batch_responses_match_the_transfer_batch_operations() {
    let (api, user) = setup().await;
    let item = |amount: i64, user: &str| {
        json!({"amount": amount, "user_id": user, "idempotency_key": uuid::Uuid::new_v4(),
               "metadata": {"row": amount}})
    };
    let body = json!({
        "items": [item(-100, &user), item(-1, &uuid::Uuid::new_v4().to_string()), item(-200, &user)],
        "idempotency_key": uuid::Uuid::new_v4(),
        "metadata": {"chunk": 1},
    });
    let (status, made) = api.post("/v2/transfer-batches", body).await;
    assert_eq!(status, 200, "{made}");
    assert!(made["items"][1]["error"].is_string(), "{made}");
    let create = response_validator("/v2/transfer-batches", "post");
    assert_valid(&create, "POST /v2/transfer-batches", &made);
    let (_, got) = api
        .get(&format!("/v2/transfer-batches/{}", id_of(&made)))
        .await;
    assert_eq!(got, made);
    let get = response_validator("/v2/transfer-batches/{transfer_batch_id}", "get");
    assert_valid(&get, "GET /v2/transfer-batches/{id}", &got);
    let (_, bare) = api
        .post("/v2/transfer-batches", json!({"items": [item(-5, &user)]}))
        .await;
    assert_valid(&create, "POST /v2/transfer-batches without metadata", &bare);
    let (_, page) = api.get("/v2/transfer-batches").await;
    assert_eq!(items(&page).len(), 2);
    let list = response_validator("/v2/transfer-batches", "get");
    assert_valid(&list, "GET /v2/transfer-batches", &page);

    let mut broken = made.clone();
    broken["status"] = json!("processing");
    assert!(!get.is_valid(&broken), "the status enum is checked");
    let mut broken = made;
    broken["items"][0]["transfer_id"] = json!(null);
    assert!(
        !get.is_valid(&broken),
        "an absent transfer id is left out, not null"
    );
}
