//! The audit trail: with auth on, every event a request causes names its token (`by`), over
//! REST's event stream and gRPC's `Subscribe`; token changes are events (id and role only); with
//! auth off no event names anyone. On a real `sms` process.

use crate::auth::{ADMIN, secured, token};
use crate::common;

use common::Sandbox;
use serde_json::{Value, json};
use spear_proto::v1;

/// Every stored event, from `GET /api/v1/events?follow=false`.
async fn events(sms: &common::Sms) -> Vec<Value> {
    let text = reqwest::Client::new()
        .get(sms.url("/api/v1/events?follow=false"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

fn find<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {events:#?}"))
}

#[tokio::test]
async fn every_mutation_names_the_token_that_made_it() {
    let sb = Sandbox::new("");
    let sms = secured(&sb);
    let deployer = token(&sms, "deployer", "operator", json!({})).await;
    // A token is `spear.<id>.<secret>`; its events name the id, not the name.
    let deployer_id = deployer.split('.').nth(1).unwrap().to_owned();
    let c = reqwest::Client::new();
    let r = c
        .post(sms.url("/api/v1/tasks"))
        .bearer_auth(&deployer)
        .json(&json!({"name": "audited", "executable": {"type": "process", "name": "/bin/true"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let r = c
        .post(sms.url("/api/v1/executions"))
        .bearer_auth(&deployer)
        .json(&json!({"executable": {"type": "process", "name": "/bin/true"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let execution: Value = r.json().await.unwrap();
    let id = execution["execution_id"].as_str().unwrap().to_owned();
    let r = c
        .delete(sms.url("/api/v1/tokens/deployer"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");

    let all = events(&sms).await;
    let made = find(&all, "token.created");
    assert_eq!(made["subject"], deployer_id.as_str(), "{made}");
    assert_eq!(made["data"], json!({"role": "operator"}), "{made}");
    assert!(made["by"].as_str().unwrap().ends_with("(admin)"), "{made}");
    assert_eq!(find(&all, "task.registered")["by"], "deployer (operator)");
    let submitted = find(&all, "execution.submitted");
    assert_eq!(submitted["subject"], id.as_str());
    assert_eq!(submitted["by"], "deployer (operator)", "{submitted}");
    let revoked = find(&all, "token.revoked");
    assert_eq!(revoked["subject"], deployer_id.as_str(), "{revoked}");
    assert!(revoked["by"].as_str().unwrap().ends_with("(admin)"));

    // gRPC carries it too.
    let mut events =
        v1::event_service_client::EventServiceClient::connect(format!("http://{}", sms.grpc))
            .await
            .unwrap();
    let mut req = tonic::Request::new(v1::SubscribeRequest { after: 0 });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let mut stream = events.subscribe(req).await.unwrap().into_inner();
    loop {
        let e = stream
            .message()
            .await
            .unwrap()
            .expect("the submission's event");
        if e.kind == "execution.submitted" {
            assert_eq!(e.by, "deployer (operator)");
            break;
        }
    }
}

#[tokio::test]
async fn with_auth_off_events_name_no_one() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let r = reqwest::Client::new()
        .post(sms.url("/api/v1/executions"))
        .json(&json!({"executable": {"type": "process", "name": "/bin/true"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let text = reqwest::get(sms.url("/api/v1/events?follow=false"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("execution.submitted"), "{text}");
    assert!(!text.contains("\"by\""), "{text}");
}
