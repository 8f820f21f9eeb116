//! Helpers shared by the simulator's integration tests: start a simulator on a free port and
//! talk to it with reqwest using the configured Basic credentials.

use payrun::dots::sim::{Sim, SimConfig, SimHandle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub struct Api {
    pub handle: SimHandle,
    pub http: reqwest::Client,
}

pub async fn start(config: SimConfig) -> Api {
    let handle = Sim::new(config)
        .spawn("127.0.0.1:0")
        .await
        .expect("sim binds");
    Api {
        handle,
        http: reqwest::Client::new(),
    }
}

impl Api {
    pub fn sim(&self) -> &Sim {
        &self.handle.sim
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.base_url, path)
    }

    pub fn hook_url(&self, path: &str) -> String {
        format!("http://{}{}", self.handle.addr, path)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let cfg = self.sim().config();
        self.http
            .request(method, self.url(path))
            .basic_auth(&cfg.client_id, Some(cfg.api_key.expose()))
    }

    /// Send with auth; return the status, the `Retry-After` header and the JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request is answered");
        let status = resp.status();
        let text = resp.text().await.expect("body is read");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Create a user with the given phone number; panics unless 201.
    pub async fn user(&self, phone: &str) -> Value {
        let (status, user) = self.post("/v2/users", user_body(phone)).await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        user
    }

    /// Create a transfer; returns status and body.
    pub async fn transfer(
        &self,
        user_id: &str,
        amount: i64,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut body = json!({ "amount": amount, "user_id": user_id });
        if let Some(key) = key {
            body["idempotency_key"] = json!(key);
        }
        self.post("/v2/transfers", body).await
    }
}

pub fn user_body(phone: &str) -> Value {
    json!({
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": format!("ada{phone}@example.com"),
        "country_code": "1",
        "phone_number": phone,
        "metadata": { "internal_id": phone },
    })
}

pub fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("object has an id").to_string()
}
