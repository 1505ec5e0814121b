//! TLS between the hosts, as processes on loopback: SMS serves REST and gRPC under TLS and asks
//! nodes for client certificates (mTLS): a client without one, or with one of another CA, is
//! refused; a Spearlet with the right CA and its certificate registers and runs work, one with
//! the wrong CA cannot; SMS serves a rotated
//! certificate without a restart and keeps the old one while the new files do not load.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::json;
use spear_tests::certs::Ca;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// `GET /healthz` over https trusting only `ca`: the status, or the error's whole chain.
async fn healthz(addr: std::net::SocketAddr, ca: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client.get(format!("https://{addr}/healthz")).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(spear_spearlet::sms::chain(&e)),
    }
}

/// A gRPC health check over TLS trusting `ca`, presenting `identity` (cert, key) if given.
async fn grpc_health(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Poll `f` until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn sms_under_tls_and_mtls_serves_nodes_with_certificates_and_reloads_its_own() {
    let c = Cluster::new();
    let dir = c.path().to_owned();
    let (ca, other) = (Ca::new("spear test CA"), Ca::new("someone else's CA"));
    ca.write(&dir.join("ca.pem"));
    other.write(&dir.join("other-ca.pem"));
    ca.server(&["127.0.0.1", "localhost"])
        .write(&dir.join("sms.pem"), &dir.join("sms-key.pem"));
    ca.client("alpha")
        .write(&dir.join("alpha.pem"), &dir.join("alpha-key.pem"));
    other
        .client("intruder")
        .write(&dir.join("intruder.pem"), &dir.join("intruder-key.pem"));
    let mut sms = c.sms_full(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[scheduler]\nstrategy = \"least-connections\"\n",
        "[tls]\ncert_file = \"sms.pem\"\nkey_file = \"sms-key.pem\"\nclient_ca_file = \"ca.pem\"\nreload_secs = 1\n",
        &[("SMS_GRPC_ENABLE_TLS", "true"), ("SMS_HTTP_ENABLE_TLS", "true")],
    );
    let (ca_pem, other_pem) = (read(&dir, "ca.pem"), read(&dir, "other-ca.pem"));
    sms.ca = Some(ca_pem.clone());

    // REST: the right CA connects; another CA and plain HTTP do not.
    assert_eq!(healthz(sms.http, &ca_pem).await, Ok(200));
    let wrong = healthz(sms.http, &other_pem).await.unwrap_err();
    assert!(wrong.contains("certificate"), "{wrong}");
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", sms.http))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP on a TLS listener: {plain:?}");

    // gRPC asks for a client certificate of the nodes' CA.
    let (alpha, alpha_key) = (read(&dir, "alpha.pem"), read(&dir, "alpha-key.pem"));
    let (intruder, intruder_key) = (read(&dir, "intruder.pem"), read(&dir, "intruder-key.pem"));
    grpc_health(sms.grpc, &ca_pem, Some((&alpha, &alpha_key)))
        .await
        .expect("a node certificate of the CA is served");
    assert!(
        grpc_health(sms.grpc, &ca_pem, None).await.is_err(),
        "no client certificate"
    );
    assert!(
        grpc_health(sms.grpc, &ca_pem, Some((&intruder, &intruder_key)))
            .await
            .is_err(),
        "a client certificate of another CA"
    );
    assert!(
        grpc_health(sms.grpc, &other_pem, Some((&alpha, &alpha_key)))
            .await
            .is_err(),
        "the Spearlet side trusts another CA"
    );

    // A Spearlet with the wrong CA cannot reach SMS and says why.
    let with_tls = |name: &str, ca_file: &str| {
        let base = c.spearlet_config(name, "").replacen(
            "[spearlet]\n",
            &format!(
                "[spearlet]\nsms_http_addr = \"{}\"\nsms_connect_timeout_ms = 3000\n",
                sms.http
            ),
            1,
        );
        format!(
            "{base}[spearlet.tls]\nsms_ca_file = \"{ca_file}\"\n\
             client_cert_file = \"alpha.pem\"\nclient_key_file = \"alpha-key.pem\"\n"
        )
    };
    let config = c.write("beta.toml", &with_tls("beta", "other-ca.pem"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .current_dir(c.path())
        .arg("--config")
        .arg(&config)
        .args(["--sms-addr", &sms.grpc.to_string(), "--auto-register"])
        .env("SPEARLET_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // With the right CA and its certificate it registers, fetches an artifact from SMS's
    // file route over https and runs it.
    let spearlet = c.spearlet_from("alpha", &sms, &with_tls("alpha", "ca.pem"));
    let meta = sms
        .upload("hello.sh", b"#!/bin/sh\necho over tls\n".to_vec())
        .await;
    let uri = meta["uri"].as_str().unwrap().to_owned();
    let id = sms
        .submit(json!({
            "executable": {"type": "process", "uri": uri},
            "max_attempts": 1,
        }))
        .await;
    let e = sms.finished(&id, Duration::from_secs(60)).await;
    assert_eq!(e["state"], "succeeded", "{e}\n{}", spearlet.log());
    assert_eq!(e["result"]["stdout"], "over tls\n");
    assert_eq!(e["node_uuid"], spearlet.node.as_str(), "{e}");

    // Rotation: a certificate of the other CA written over the files is served without a
    // restart; the old CA no longer verifies it.
    let next = other.server(&["127.0.0.1"]);
    c.write("sms-key.pem", &next.key);
    c.write("sms.pem", &next.cert);
    assert!(
        eventually(Duration::from_secs(15), || async {
            healthz(sms.http, &other_pem).await == Ok(200)
        })
        .await,
        "the rotated certificate is served"
    );
    assert!(healthz(sms.http, &ca_pem).await.is_err());

    // A file that does not load leaves the current certificate in place.
    c.write("sms.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(healthz(sms.http, &other_pem).await, Ok(200));
}
