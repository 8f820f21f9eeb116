//! The operators' dashboard over HTTP: the token guards every page and API route (bearer or
//! the `/login` cookie), cookie-authenticated forms need the CSRF field, pages filter by state
//! and escape user data, and the actions act through `ops` (a rerun puts a failed item back).

use crate::common::app::*;
use crate::fixture::{batch_with_a_failed_item, serve_dashboard};
use payrun::item::ItemState;
use reqwest::{Client, StatusCode, header};
use serde_json::Value;

on_both_backends!(
    every_page_and_api_route_answers_401_without_the_right_token,
    the_bearer_token_opens_the_pages_and_the_api,
    login_sets_an_http_only_strict_cookie_that_opens_the_dashboard,
    a_form_posted_with_the_cookie_alone_needs_the_csrf_field,
    the_batch_page_and_api_filter_items_by_state,
    rerunning_a_failed_item_through_the_api_sends_it_back_to_awaiting_payout,
    payee_ids_are_html_escaped_on_every_page,
    unknown_batches_and_items_answer_404,
    the_session_cookie_holds_a_value_derived_from_the_token_never_the_token,
    the_session_cookie_is_secure_unless_configured_for_plain_http,
    stored_control_and_bidi_characters_show_as_visible_escapes_on_every_page,
);

const TOKEN: &str = "dash-test-token-0123456789-abcdefghij";

/// The `name=value` pair of the session cookie `/login` sets.
async fn session_cookie(http: &Client, base: &str) -> String {
    let r = http
        .get(format!("{base}/login?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

/// A client that shows redirects instead of following them.
fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Posts fields as a browser's form does (reqwest's own `form` is a feature payrun leaves off).
trait FormFields {
    fn form_fields(self, fields: &[(&str, &str)]) -> Self;
}

impl FormFields for reqwest::RequestBuilder {
    fn form_fields(self, fields: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
    }
}

fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form with a csrf field")
        + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_string()
}

async fn every_page_and_api_route_answers_401_without_the_right_token(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, failed) = batch_with_a_failed_item(&app, &["paid"]).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    let gets = [
        "/".to_string(),
        format!("/batches/{batch}"),
        format!("/items/{}", failed.id),
        "/api/batches".to_string(),
        format!("/api/batches/{batch}"),
        format!("/api/items/{}", failed.id),
    ];
    let wrong: [(&str, String); 4] = [
        ("none", String::new()),
        ("authorization", format!("Bearer {TOKEN}x")),
        ("authorization", "Bearer ".to_string()),
        (
            "cookie",
            format!("payrun_token={}", &TOKEN[..TOKEN.len() - 1]),
        ),
    ];
    for (name, value) in &wrong {
        let with = |r: reqwest::RequestBuilder| match *name {
            "none" => r,
            n => r.header(n, value.as_str()),
        };
        for path in &gets {
            let r = with(http.get(format!("{base}{path}")))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "GET {path} with {name}"
            );
        }
        let r = with(http.post(format!("{base}/api/batches/{batch}/rerun")))
            .json(&serde_json::json!({ "item": failed.id.to_string() }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "API POST with {name}");
        let r = with(http.post(format!("{base}/batches/{batch}/rerun")))
            .form_fields(&[("item", failed.id.to_string().as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "form POST with {name}"
        );
    }
    let r = http
        .get(format!("{base}/login?token=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(
        app.item(batch, "broke").await.state,
        ItemState::Failed,
        "no refused request changed anything"
    );
}

async fn the_bearer_token_opens_the_pages_and_the_api(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, failed) = batch_with_a_failed_item(&app, &["paid"]).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    let get = |path: String| http.get(format!("{base}{path}")).bearer_auth(TOKEN).send();

    let r = get("/".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains(&batch.to_string()), "the batch is listed");
    assert!(page.contains("2 / 2 settled"), "progress: {page}");
    assert!(page.contains("$18.25"), "the total is formatted");

    let list: Value = get("/api/batches".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["batch_id"], batch.to_string());
    assert_eq!(list[0]["items"], 2);

    let item: Value = get(format!("/api/items/{}", failed.id))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item["state"], "failed");
    assert!(
        item["events"].as_array().unwrap().len() >= 3,
        "the item's history comes along: {item}"
    );
    let page = get(format!("/items/{}", failed.id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("History"), "{page}");
    assert!(
        page.contains("transferred → failed"),
        "the failure is in the history: {page}"
    );
}

async fn login_sets_an_http_only_strict_cookie_that_opens_the_dashboard(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    let r = http
        .get(format!("{base}/login?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/");
    let cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("payrun_token="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    let pair = cookie.split(';').next().unwrap();
    for path in ["/", "/api/batches"] {
        let r = http
            .get(format!("{base}{path}"))
            .header(header::COOKIE, format!("theme=dark; {pair}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path} with the cookie");
    }
}

async fn a_form_posted_with_the_cookie_alone_needs_the_csrf_field(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!("{HEADER}{}", new_payee_row("newbie", "3.00", "5550950"));
    let batch = app.batch(&csv).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    let cookie = session_cookie(&http, &base).await;
    let page = http
        .get(format!("{base}/batches/{batch}"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    let item = app.item(batch, "newbie").await.id.to_string();
    let cancel = format!("{base}/batches/{batch}/cancel");

    for bad in [None, Some("0123"), Some("")] {
        let mut form = vec![("item", item.as_str())];
        form.extend(bad.map(|c| ("csrf", c)));
        let r = http
            .post(&cancel)
            .header(header::COOKIE, &cookie)
            .form_fields(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "csrf {bad:?}");
    }
    let r = http
        .post(format!("{base}/api/batches/{batch}/cancel"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "API POST with the cookie alone"
    );
    assert_eq!(app.item(batch, "newbie").await.state, ItemState::Pending);

    let r = http
        .post(&cancel)
        .header(header::COOKIE, &cookie)
        .form_fields(&[
            ("item", item.as_str()),
            ("csrf", &csrf),
            ("state", "pending"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[header::LOCATION].to_str().unwrap();
    assert_eq!(
        to,
        format!("/batches/{batch}?state=pending&msg=canceled+1+item+%28newbie%29")
    );
    assert_eq!(app.item(batch, "newbie").await.state, ItemState::Canceled);
    let page = http
        .get(format!("{base}{to}"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("canceled 1 item (newbie)"), "flash shown");
}

async fn the_batch_page_and_api_filter_items_by_state(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, _) = batch_with_a_failed_item(&app, &["alice", "bob"]).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    let get = |path: String| http.get(format!("{base}{path}")).bearer_auth(TOKEN).send();

    let all = get(format!("/batches/{batch}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for payee in ["alice", "bob", "broke"] {
        assert!(
            all.contains(&format!("data-payee=\"{payee}\"")),
            "{payee} listed"
        );
    }
    for state in ["failed", "awaiting_payout", "pending"] {
        assert!(
            all.contains(&format!("href=\"/batches/{batch}?state={state}\"")),
            "a link filters by {state}"
        );
    }
    let failed = get(format!("/batches/{batch}?state=failed"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(failed.contains("data-payee=\"broke\""));
    assert!(!failed.contains("data-payee=\"alice\"") && !failed.contains("data-payee=\"bob\""));
    assert!(
        failed.contains(">Rerun</button>"),
        "failed items offer Rerun"
    );

    let v: Value = get(format!("/api/batches/{batch}?state=awaiting_payout"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payees: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["payee_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(payees, ["alice", "bob"]);
    assert_eq!(v["status"]["items"], 3);

    let r = get(format!("/api/batches/{batch}?state=nonsense"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

async fn rerunning_a_failed_item_through_the_api_sends_it_back_to_awaiting_payout(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let (batch, failed) = batch_with_a_failed_item(&app, &["paid"]).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();

    let r: Value = http
        .post(format!("{base}/api/batches/{batch}/rerun"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "item": failed.id.to_string() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["done"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["done"][0][1], "broke");
    assert_eq!(app.item(batch, "broke").await.state, ItemState::Transferred);

    app.step_until_idle(batch).await;
    let v: Value = http
        .get(format!("{base}/api/items/{}", failed.id))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "awaiting_payout");
    app.assert_paid_exactly_once(batch).await;

    // A second rerun of the whole batch finds nothing failed: it changes nothing.
    let r: Value = http
        .post(format!("{base}/api/batches/{batch}/rerun"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["done"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 2);
}

async fn payee_ids_are_html_escaped_on_every_page(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let evil = "<script>alert(1)</script>&\"'";
    let csv = format!("{HEADER}{}", new_payee_row(evil, "3.00", "5550960"));
    let batch = app.batch(&csv).await;
    let item = app.item(batch, evil).await.id;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    for path in [format!("/batches/{batch}"), format!("/items/{item}")] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        let page = r.text().await.unwrap();
        assert!(!page.contains("<script"), "{path} leaks markup");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#39;"));
    }
    let r = http
        .get(format!("{base}/?msg=%3Cb%3Ehi%3C%2Fb%3E"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(
        r.text().await.unwrap().contains("&lt;b&gt;hi&lt;/b&gt;"),
        "flash escaped"
    );
}

async fn unknown_batches_and_items_answer_404(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    let nil = uuid::Uuid::nil();
    for path in [
        format!("/batches/{nil}"),
        format!("/items/{nil}"),
        "/batches/not-an-id".to_string(),
        format!("/api/batches/{nil}"),
        format!("/api/items/{nil}"),
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    let r = http
        .post(format!("{base}/api/batches/{nil}/approve"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

async fn the_session_cookie_holds_a_value_derived_from_the_token_never_the_token(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    let pair = session_cookie(&http, &base).await;
    let value = pair
        .strip_prefix("payrun_token=")
        .expect("the session cookie");
    assert!(!value.contains(TOKEN), "the cookie holds the token: {pair}");
    assert!(
        value.len() == 64 && value.bytes().all(|c| c.is_ascii_hexdigit()),
        "an HMAC in hex: {value}"
    );
    let status = |r: reqwest::RequestBuilder| async { r.send().await.unwrap().status() };
    let opened = status(http.get(format!("{base}/")).header(header::COOKIE, &pair)).await;
    assert_eq!(opened, StatusCode::OK, "the session cookie opens the pages");
    let raw = status(
        http.get(format!("{base}/"))
            .header(header::COOKIE, format!("payrun_token={TOKEN}")),
    )
    .await;
    assert_eq!(raw, StatusCode::UNAUTHORIZED, "the raw token is no session");
    let as_bearer = status(http.get(format!("{base}/api/batches")).bearer_auth(value)).await;
    assert_eq!(
        as_bearer,
        StatusCode::UNAUTHORIZED,
        "a leaked cookie is not the token"
    );
}

async fn the_session_cookie_is_secure_unless_configured_for_plain_http(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let http = client();
    for (secure, want) in [(true, true), (false, false)] {
        let base = crate::fixture::serve_dashboard_with(&app, TOKEN, secure).await;
        let r = http
            .get(format!("{base}/login?token={TOKEN}"))
            .send()
            .await
            .unwrap();
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
        let flags: Vec<&str> = cookie.split(';').map(str::trim).collect();
        assert_eq!(flags.contains(&"Secure"), want, "secure={secure}: {cookie}");
        assert!(flags.contains(&"HttpOnly") && flags.contains(&"SameSite=Strict"));
    }
}

async fn stored_control_and_bidi_characters_show_as_visible_escapes_on_every_page(b: Backend) {
    let app = spawn_app(b, quiet_sim()).await;
    let csv = format!(
        "{HEADER}{}",
        new_payee_row("plain-payee", "3.00", "5550961")
    );
    let batch = app.batch(&csv).await;
    let item = app.item(batch, "plain-payee").await.id;
    // Written straight into the store, as an earlier version or a DB schedule could have.
    let evil = "admin\u{202e}gpj.exe\u{1b}[31m\u{2066}x";
    raw_exec(
        &app,
        &format!(
            "UPDATE items SET payee_id = '{evil}', last_error = 'boom\u{1b}]8;;http://evil\u{7}' WHERE id = '{item}'"
        ),
    )
    .await;
    let base = serve_dashboard(&app, TOKEN).await;
    let http = client();
    for path in [format!("/batches/{batch}"), format!("/items/{item}")] {
        let page = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for c in ['\u{202e}', '\u{1b}', '\u{2066}', '\u{7}'] {
            assert!(!page.contains(c), "{path} shows {c:?} raw");
        }
        assert!(
            page.contains("admin\\u{202e}gpj.exe\\u{1b}[31m\\u{2066}x"),
            "{path}: the payee id shows escaped"
        );
        assert!(
            page.contains("boom\\u{1b}]8;;http://evil\\u{7}"),
            "{path}: the error too"
        );
    }
}
