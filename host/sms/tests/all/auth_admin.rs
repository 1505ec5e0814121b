//! Who may call the web admin's routes (`/admin/api/…` and the page) on a real `sms`: with
//! `[auth]` on, each route asks what its REST twin asks, tried with no token and each role; with
//! `[auth]` off and `SMS_WEB_ADMIN_TOKEN` set (SPEAR's protection), the admin listener asks every
//! call for a valid token while the REST listener stays as configured.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth::{ADMIN, token};
use crate::common::Sandbox;

const ROLES: [&str; 4] = ["reader", "operator", "admin", "node"];

/// The web admin's routes and the roles that may call each (`[]`: open to anyone).
const ADMIN_ROUTES: &[(&str, &str, &[&str])] = &[
    ("GET", "/", &[]),
    ("GET", "/admin", &[]),
    ("GET", "/admin/", &[]),
    ("GET", "/admin/static/app.js", &[]),
    ("GET", "/admin/static/style.css", &[]),
    ("GET", "/admin/api/nodes", &["reader", "operator", "admin"]),
    (
        "GET",
        "/admin/api/nodes/some-node",
        &["reader", "operator", "admin"],
    ),
    (
        "GET",
        "/admin/api/nodes/stream?once=true",
        &["reader", "operator", "admin"],
    ),
    ("GET", "/admin/api/stats", &["reader", "operator", "admin"]),
    ("GET", "/admin/api/tasks", &["reader", "operator", "admin"]),
    ("POST", "/admin/api/tasks", &["operator", "admin"]),
    (
        "GET",
        "/admin/api/tasks/some-task",
        &["reader", "operator", "admin"],
    ),
    ("GET", "/admin/api/files", &["reader", "operator", "admin"]),
    ("POST", "/admin/api/files", &["operator", "admin"]),
    (
        "POST",
        "/admin/api/files/presign-upload",
        &["operator", "admin"],
    ),
    (
        "GET",
        "/admin/api/files/some-file",
        &["reader", "operator", "admin", "node"],
    ),
    (
        "GET",
        "/admin/api/files/some-file/meta",
        &["reader", "operator", "admin", "node"],
    ),
    (
        "DELETE",
        "/admin/api/files/some-file",
        &["operator", "admin"],
    ),
];

async fn status(base: &str, method: &str, path: &str, token: Option<&str>) -> StatusCode {
    let c = reqwest::Client::new();
    let mut req = c.request(method.parse().unwrap(), format!("{base}{path}"));
    if method == "POST" && path.ends_with("/tasks") {
        req = req.json(&json!({ "name": "by-role" }));
    } else if method == "POST" && path.ends_with("/files") {
        req = req.header("x-file-name", "f.txt").body("content");
    } else if method == "POST" {
        req = req.json(&json!({}));
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn every_web_admin_route_answers_each_token_as_its_rest_twin() {
    let sb = Sandbox::new(
        "enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n[auth]\nenabled = true\n",
    );
    let sms = sb.start_with_env(&[], &[("SMS_ADMIN_TOKEN", ADMIN)]);
    let base = format!("http://{}", sms.admin.expect("the web admin is served"));
    let mut by_role = BTreeMap::new();
    for role in ROLES {
        by_role.insert(
            role,
            token(&sms, &format!("w-{role}"), role, json!({})).await,
        );
    }
    for (method, path, allowed) in ADMIN_ROUTES {
        let route = format!("{method} {path}");
        let anyone = status(&base, method, path, None).await;
        if allowed.is_empty() {
            assert_eq!(anyone, StatusCode::OK, "{route} is open");
            continue;
        }
        assert_eq!(anyone, StatusCode::UNAUTHORIZED, "{route} without a token");
        for role in ROLES {
            let got = status(&base, method, path, Some(&by_role[role])).await;
            if allowed.contains(&role) {
                assert!(
                    got != StatusCode::UNAUTHORIZED && got != StatusCode::FORBIDDEN,
                    "{route} as {role}: {got}"
                );
            } else {
                assert_eq!(got, StatusCode::FORBIDDEN, "{route} as {role}");
            }
        }
    }
}

#[tokio::test]
async fn the_web_admin_page_is_open_and_its_api_takes_sms_web_admin_token() {
    let sb = Sandbox::new(
        "enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n[auth]\nenabled = true\n",
    );
    let web = "web-admin-token-as-spear-names-it-0001";
    let sms = sb.start_with_env(&[], &[("SMS_WEB_ADMIN_TOKEN", web)]);
    let admin = sms.admin.expect("the web admin is served");
    let c = reqwest::Client::new();
    // The page itself holds no data; its script sends the token typed into it with every call.
    let script = c
        .get(format!("http://{admin}/admin/static/lib.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    // No framing, no foreign scripts, no sniffing.
    let csp = script.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(script.headers()["x-frame-options"], "DENY");
    assert_eq!(script.headers()["x-content-type-options"], "nosniff");
    let doc = c
        .get(format!("http://{admin}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), StatusCode::OK, "the API's document, open");
    assert!(
        script.text().await.unwrap().contains("'Bearer ' + token"),
        "the page sends the token"
    );
    let nodes = format!("http://{admin}/api/v1/nodes");
    assert_eq!(
        c.get(&nodes).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = c.get(&nodes).bearer_auth(web).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let who: Value = c
        .get(format!("http://{admin}/api/v1/whoami"))
        .bearer_auth(web)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["name"], "SMS_WEB_ADMIN_TOKEN");
    assert_eq!(who["role"], "admin");
}

#[tokio::test]
async fn with_auth_off_sms_web_admin_token_still_guards_the_admin_and_only_it() {
    let sb = Sandbox::new("enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n");
    let web = "web-admin-token-as-spear-names-it-0002";
    let sms = sb.start_with_env(&[], &[("SMS_WEB_ADMIN_TOKEN", web)]);
    let base = format!("http://{}", sms.admin.expect("the web admin is served"));
    for (method, path, allowed) in ADMIN_ROUTES {
        let route = format!("{method} {path}");
        let anyone = status(&base, method, path, None).await;
        if allowed.is_empty() {
            assert_eq!(anyone, StatusCode::OK, "{route} is open");
            continue;
        }
        assert_eq!(anyone, StatusCode::UNAUTHORIZED, "{route} without a token");
        let wrong = status(&base, method, path, Some("spear.0000000000000000.00")).await;
        assert_eq!(
            wrong,
            StatusCode::UNAUTHORIZED,
            "{route} with a wrong token"
        );
        let right = status(&base, method, path, Some(web)).await;
        assert!(
            right != StatusCode::UNAUTHORIZED && right != StatusCode::FORBIDDEN,
            "{route} with the token: {right}"
        );
    }
    // A token SMS issued counts with its role, as with auth on: a reader reads and is refused
    // writes (no minting of tokens through this listener).
    // (Made on SMS's REST listener, open with auth off: the helper's admin token is not read.)
    let reader = token(&sms, "admin-reader", "reader", json!({})).await;
    assert_eq!(
        status(&base, "GET", "/admin/api/nodes", Some(&reader)).await,
        StatusCode::OK
    );
    for (method, path) in [
        ("POST", "/admin/api/tasks"),
        ("POST", "/api/v1/tokens"),
        ("POST", "/api/v1/plugins/reload"),
    ] {
        assert_eq!(
            status(&base, method, path, Some(&reader)).await,
            StatusCode::FORBIDDEN,
            "{method} {path} as a reader"
        );
    }
    // The REST API of the same listener is guarded too; SMS's own REST listener is as
    // configured (auth off: open).
    assert_eq!(
        status(&base, "GET", "/api/v1/tasks", None).await,
        StatusCode::UNAUTHORIZED
    );
    let open = reqwest::get(sms.url("/api/v1/tasks")).await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);

    // Without SMS_WEB_ADMIN_TOKEN, an auth-off admin is open, as SPEAR's is.
    let sb = Sandbox::new("enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n");
    let sms = sb.start(&[]);
    let base = format!("http://{}", sms.admin.expect("the web admin is served"));
    assert_eq!(
        status(&base, "GET", "/admin/api/stats", None).await,
        StatusCode::OK
    );
}
