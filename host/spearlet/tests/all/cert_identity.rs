//! Node identity from mTLS client certificates (`[auth] node_certificates`), as processes on
//! loopback: a Spearlet with no token whose certificate names its node (`spear-node:<uuid>`)
//! registers, fetches its artifact from SMS's REST with the certificate, and runs work; the
//! event log names the certificate. A certificate naming another node cannot register as this
//! one, and one that names no node, without a token, is refused.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::Cluster;
use serde_json::json;
use spear_tests::certs::Ca;

const ADMIN: &str = "bootstrap-admin-token-for-cert-nodes-01";
const ALPHA: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
const BETA: &str = "0b0b0b0b-0000-4000-8000-00000000000b";

/// Run a Spearlet that is expected to fail at start; its standard error.
fn refused(c: &Cluster, config: &Path, sms: &common::Sms) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .current_dir(c.path())
        .arg("--config")
        .arg(config)
        .args(["--sms-addr", &sms.grpc.to_string(), "--auto-register"])
        .env("SPEARLET_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_certificate_is_its_nodes_credential_and_no_other() {
    let c = Cluster::new();
    let dir = c.path().to_owned();
    let ca = Ca::new("spear nodes CA");
    ca.write(&dir.join("ca.pem"));
    ca.server(&["127.0.0.1"])
        .write(&dir.join("sms.pem"), &dir.join("sms-key.pem"));
    ca.client(&format!("spear-node:{ALPHA}"))
        .write(&dir.join("alpha.pem"), &dir.join("alpha-key.pem"));
    ca.client("operator-laptop")
        .write(&dir.join("laptop.pem"), &dir.join("laptop-key.pem"));
    let mut sms = c.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"least-connections\"\n",
        "[auth]\nenabled = true\nnode_certificates = true\n\
         [tls]\ncert_file = \"sms.pem\"\nkey_file = \"sms-key.pem\"\nclient_ca_file = \"ca.pem\"\n",
        &[
            ("SMS_GRPC_ENABLE_TLS", "true"),
            ("SMS_HTTP_ENABLE_TLS", "true"),
            ("SMS_ADMIN_TOKEN", ADMIN),
        ],
    );
    sms.ca = Some(std::fs::read_to_string(dir.join("ca.pem")).unwrap());
    sms.token = Some(ADMIN.to_owned());
    let config = |name: &str, uuid: &str, cert: &str| {
        let base = c.spearlet_config(name, "").replacen(
            "[spearlet]\n",
            &format!(
                "[spearlet]\nsms_http_addr = \"{}\"\nnode_uuid = \"{uuid}\"\nsms_connect_timeout_ms = 3000\n",
                sms.http
            ),
            1,
        );
        format!(
            "{base}[spearlet.tls]\nsms_ca_file = \"ca.pem\"\n\
             client_cert_file = \"{cert}.pem\"\nclient_key_file = \"{cert}-key.pem\"\n"
        )
    };

    // Alpha's certificate on a Spearlet that says it is beta: refused as beta.
    let beta = c.write("beta.toml", &config("beta", BETA, "alpha"));
    let err = refused(&c, &beta, &sms);
    assert!(err.contains(&format!("belongs to node `{ALPHA}`")), "{err}");

    // A certificate of the CA that names no node, and no token: a request without a credential.
    let laptop = c.write("laptop.toml", &config("laptop", BETA, "laptop"));
    let err = refused(&c, &laptop, &sms);
    assert!(err.contains("needs a token"), "{err}");

    // Alpha with its own certificate and no token: registers, fetches its artifact from SMS's
    // file route over https with the certificate, and runs it.
    let spearlet = c.spearlet_from("alpha", &sms, &config("alpha", ALPHA, "alpha"));
    assert_eq!(spearlet.node, ALPHA);
    let meta = sms
        .upload("hello.sh", b"#!/bin/sh\necho by certificate\n".to_vec())
        .await;
    let id = sms
        .submit(json!({
            "executable": {"type": "process", "uri": meta["uri"]},
            "max_attempts": 1,
        }))
        .await;
    let e = sms.finished(&id, Duration::from_secs(60)).await;
    assert_eq!(e["state"], "succeeded", "{e}\n{}", spearlet.log());
    assert_eq!(e["result"]["stdout"], "by certificate\n");
    assert_eq!(e["node_uuid"], ALPHA, "{e}");

    // The audit trail names the certificate.
    let events = sms.events().await;
    let registered = events
        .iter()
        .find(|e| e["kind"] == "node.registered" && e["subject"] == ALPHA);
    assert_eq!(
        registered.as_ref().map(|e| e["by"].clone()),
        Some(json!(format!("spear-node:{ALPHA} (node)"))),
        "{events:?}"
    );
}
