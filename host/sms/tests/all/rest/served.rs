//! What the gateway serves besides the API: OpenAPI, Swagger UI, metrics, health, web admin.

use crate::common;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn openapi_swagger_metrics_health_and_admin_are_served() {
    let sb = Sandbox::new(
        "enable_swagger = true\nenable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n",
    );
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let doc: Value = c
        .get(sms.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every route of the REST router is documented.
    for path in [
        "/api/v1/nodes",
        "/api/v1/nodes/{uuid}",
        "/api/v1/nodes/{uuid}/heartbeat",
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/executions",
        "/api/v1/executions/{execution_id}",
        "/api/v1/executions/{execution_id}/cancel",
        "/api/v1/files",
        "/api/v1/files/{file_id}",
        "/api/v1/files/{file_id}/meta",
        "/api/v1/plugins",
        "/api/v1/plugins/reload",
        "/api/v1/plugins/history",
        "/api/v1/events",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let ui = c.get(sms.url("/swagger-ui/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "Swagger UI is served without any network"
    );
    let health: Value = c
        .get(sms.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = common::get_text(&c, &sms, "/metrics").await;
    assert!(metrics.contains("spear_plugin_reloads_total"), "{metrics}");
    let plugins: Value = c
        .get(sms.url("/api/v1/plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"redb") && names.contains(&"least-connections"),
        "{names:?}"
    );
    let report: Value = c
        .post(sms.url("/api/v1/plugins/reload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report["outcome"].is_string(), "{report}");
}
