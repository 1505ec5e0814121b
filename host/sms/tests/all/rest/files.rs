//! Files through the REST gateway, content-addressed.

use crate::common;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn files_round_trip_content_addressed() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let bytes = b"\0asm\x01\x00\x00\x00 pretend module".to_vec();
    let r = c
        .post(sms.url("/api/v1/files?name=hello.wasm"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let meta: Value = r.json().await.unwrap();
    let id = meta["file_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(meta["uri"], format!("sms+file://{id}"));
    assert_eq!(meta["size"], bytes.len());
    let got = c
        .get(sms.url(&format!("/api/v1/files/{id}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice());
    assert!(sb.path().join("data/files").join(&id).is_file());
    // The same bytes again: the same file.
    let again: Value = c
        .post(sms.url("/api/v1/files?name=copy.wasm"))
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["file_id"], id.as_str());
    let r = c
        .delete(sms.url(&format!("/api/v1/files/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        c.get(sms.url(&format!("/api/v1/files/{id}/meta")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}
