//! The REST and gRPC edge under hostile or careless clients: slow and idle connections are
//! closed, a connection cap answers 503, oversized and slow bodies get 413 and 408 before they
//! are buffered, and malformed protobuf is `InvalidArgument`. Each test runs the real `sms` binary
//! on loopback and talks to it over sockets.

use crate::common;

use std::time::{Duration, Instant};

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Descriptors a process holds.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Read until the peer closes (or resets) the connection; the bytes read, or `None` if it was
/// still open after `limit`.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz_ok(c: &reqwest::Client, sms: &common::Sms) {
    let r = tokio::time::timeout(Duration::from_secs(5), c.get(sms.url("/healthz")).send())
        .await
        .expect("/healthz answers within 5 s")
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn slow_header_senders_are_closed_and_healthz_answers_throughout() {
    let sb = Sandbox::new("");
    sb.write_config_with("[http]\naddr = \"127.0.0.1:0\"\nheader_read_timeout_secs = 1\n");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    healthz_ok(&c, &sms).await;
    let baseline = fds(sms.child.id());

    // 300 slowloris clients: a request line, then one header line every 200 ms.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(sms.http).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let dribble = tokio::spawn(async move {
        let mut closed = 0;
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for s in &mut slow {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    closed += 1;
                }
            }
        }
        (slow, closed)
    });
    // Health answers all along.
    for _ in 0..8 {
        healthz_ok(&c, &sms).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (mut slow, _) = dribble.await.unwrap();
    for s in &mut slow {
        let answer = read_to_close(s, Duration::from_secs(5))
            .await
            .expect("a slow client is closed after the header-read timeout");
        // hyper answers 408 or just closes; never a 200.
        assert!(!String::from_utf8_lossy(&answer).contains(" 200 "));
    }
    drop(slow);
    // The descriptors went back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds(sms.child.id()) > baseline + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fds(sms.child.id()) <= baseline + 5,
        "{} descriptors, {baseline} before",
        fds(sms.child.id())
    );
    healthz_ok(&c, &sms).await;
}

#[tokio::test]
async fn connections_past_the_cap_get_a_503_json_answer_and_idle_ones_are_closed() {
    let sb = Sandbox::new("");
    sb.write_config_with(
        "[http]\naddr = \"127.0.0.1:0\"\nmax_connections = 20\nidle_timeout_secs = 2\n",
    );
    let sms = sb.start(&[]);
    // 20 connections that say nothing hold every slot.
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(TcpStream::connect(sms.http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(sms.http).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let answer = read_to_close(&mut extra, Duration::from_secs(5))
        .await
        .expect("a connection past the cap is closed at once");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the limit is 20")
    );

    // The quiet ones are closed after the idle timeout, and the slots come back.
    for s in &mut quiet {
        read_to_close(s, Duration::from_secs(6))
            .await
            .expect("an idle connection is closed after http.idle_timeout_secs");
    }
    let c = reqwest::Client::new();
    healthz_ok(&c, &sms).await;
}

#[tokio::test]
async fn oversized_bodies_get_413_before_they_are_read_and_slow_ones_408() {
    let sb = Sandbox::new("");
    sb.write_config_with(
        "[http]\naddr = \"127.0.0.1:0\"\nmax_body_kb = 64\nbody_timeout_secs = 1\n",
    );
    let sms = sb.start(&[]);

    // A 100 MB body announced: 413 at once, from the headers alone, none of the body read.
    let mut s = TcpStream::connect(sms.http).await.unwrap();
    s.write_all(
        b"POST /api/v1/executions HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n\
          content-length: 104857600\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("SMS answers and closes without reading 100 MB");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""code":"too_large""#), "{text}");

    // The same without a length (chunked): 413 once the limit is passed.
    let c = reqwest::Client::new();
    let big = format!(
        r#"{{"executable":{{"type":"process","name":"/bin/true"}},"stdin":"{}"}}"#,
        "x".repeat(200 * 1024)
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = c
        .post(sms.url("/api/v1/executions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");

    // An upload over [files] max_upload_mb (1 MiB here) by its length: 413 too.
    let r = c
        .post(sms.url("/api/v1/files?name=big"))
        .body(vec![0u8; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A body that stops half-way: 408 after the body timeout.
    let mut s = TcpStream::connect(sms.http).await.unwrap();
    s.write_all(
        b"POST /api/v1/executions HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"executable\":",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("SMS answers a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"timeout""#), "{text}");
    healthz_ok(&c, &sms).await;
}

/// Sends raw bytes as a gRPC request message.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let channel = tonic::transport::Endpoint::from_shared(sms.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // Field 1 as a length-delimited string of 200 bytes, with 3 present.
    let status = grpc
        .unary(
            tonic::Request::new(vec![0x0a, 0xc8, 0x01, b'a', b'b', b'c']),
            "/spear.v1.NodeService/RegisterNode".parse().unwrap(),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed"), "{status:?}");
}

async fn submit(c: &reqwest::Client, sms: &common::Sms, body: Value) -> (StatusCode, Value) {
    common::post_json(c, sms, "/api/v1/executions", &body).await
}

#[tokio::test]
async fn numbers_strings_and_uris_are_checked_at_submit() {
    use serde_json::json;
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let exe = json!({"type": "process", "name": "/bin/true"});
    let cases = [
        (
            json!({"executable": exe, "timeout_ms": 9223372036854775807u64}),
            "timeout_ms",
        ),
        (
            json!({"executable": exe, "timeout_ms": 18446744073709551615u64}),
            "timeout_ms",
        ),
        (
            json!({"executable": exe, "needs": {"memory_mb": 9223372036854775808u64}}),
            "needs.memory_mb",
        ),
        (
            json!({"executable": exe, "needs": {"cpu_millis": 18446744073709551615u64}}),
            "needs.cpu_millis",
        ),
        (
            json!({"executable": {"type": "wasm", "uri": "sms+file://../../etc/passwd"}}),
            "executable.uri",
        ),
        (
            json!({"executable": {"type": "wasm", "uri": "file:///srv/../etc/passwd"}}),
            "executable.uri",
        ),
        (
            json!({"executable": {"type": "wasm", "uri": "https://"}}),
            "executable.uri",
        ),
        (
            json!({"executable": {"type": "process", "name": "/bin/tr\u{0}ue"}}),
            "executable.name",
        ),
        (
            json!({"executable": {"type": "process", "name": "/bin/echo", "args": ["a\u{0}"]}}),
            "executable.args[0]",
        ),
        (
            json!({"executable": {"type": "process", "name": "/bin/env", "env": {"A=B": "c"}}}),
            "executable.env.A=B",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = submit(&c, &sms, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // Nothing was stored.
    let list = common::get_json(&c, &sms, "/api/v1/executions").await;
    assert_eq!(list["executions"].as_array().unwrap().len(), 0);

    // Task registration checks its texts and ranges as well.
    let r = c
        .post(sms.url("/api/v1/tasks"))
        .json(&json!({"name": "a\u{7}b", "executable": exe}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .post(sms.url("/api/v1/tasks"))
        .json(
            &json!({"name": "t", "executable": exe, "needs": {"disk_mb": 18446744073709551615u64}}),
        )
        .send()
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"]["field"], "needs.disk_mb");
}

#[tokio::test]
async fn an_execution_no_node_could_hold_is_shown_unschedulable_or_refused() {
    use serde_json::json;
    let node = json!({"uuid": "11111111-2222-3333-4444-555555555555", "ip_address": "127.0.0.1",
        "port": 9, "executors": ["process"],
        "capacity": {"cpu_millis": 2000, "memory_mb": 1024, "disk_mb": 1000}});
    let big = json!({"executable": {"type": "process", "name": "/bin/true"},
        "needs": {"memory_mb": 4096}});

    // queue (the default): accepted, with the reason, cleared when a node that fits arrives.
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    c.post(sms.url("/api/v1/nodes"))
        .json(&node)
        .send()
        .await
        .unwrap();
    let (status, exec) = submit(&c, &sms, big.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{exec}");
    let error = exec["error"].as_str().unwrap();
    assert!(
        error.starts_with("unschedulable: needs 4096 MiB of memory") && error.contains("1024"),
        "{error}"
    );
    let (_, wasm) = submit(
        &c,
        &sms,
        json!({"executable": {"type": "wasm", "uri": "file:///a.wasm"}}),
    )
    .await;
    assert!(
        wasm["error"]
            .as_str()
            .unwrap()
            .contains("no registered node runs `wasm`"),
        "{wasm}"
    );
    // Waiting on the wasm execution (which no node runs): pending, and unschedulable too.
    let mut after = big.clone();
    after["depends_on"] = json!([wasm["execution_id"]]);
    let (_, pending) = submit(&c, &sms, after).await;
    assert_eq!(pending["state"], "pending", "{pending}");
    assert!(
        pending["error"]
            .as_str()
            .unwrap()
            .starts_with("unschedulable: needs 4096 MiB"),
        "{pending}"
    );
    let mut roomy = node.clone();
    roomy["uuid"] = json!("21111111-2222-3333-4444-555555555555");
    roomy["capacity"]["memory_mb"] = json!(8192);
    c.post(sms.url("/api/v1/nodes"))
        .json(&roomy)
        .send()
        .await
        .unwrap();
    // Both reasons are cleared, the pending one's too, though it is not ready yet.
    for e in [&exec, &pending] {
        let id = e["execution_id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
            if now["error"].is_null() {
                break;
            }
            assert!(Instant::now() < deadline, "still {now}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let id = wasm["execution_id"].as_str().unwrap();
    let still = common::get_json(&c, &sms, &format!("/api/v1/executions/{id}")).await;
    assert!(
        still["error"].as_str().unwrap().contains("runs `wasm`"),
        "{still}"
    );
    drop(sms);

    // refuse: 400 naming the field, while a node is registered.
    let sb = Sandbox::new("unschedulable = \"refuse\"");
    let sms = sb.start(&[]);
    let (status, _) = submit(&c, &sms, big.clone()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "no node registered yet: nodes may still come"
    );
    c.post(sms.url("/api/v1/nodes"))
        .json(&node)
        .send()
        .await
        .unwrap();
    let (status, answer) = submit(&c, &sms, big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "needs.memory_mb");
}

#[tokio::test]
async fn file_names_are_checked_and_downloads_carry_rfc_6266_names() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let r = c
        .post(sms.url("/api/v1/files?name=a%0Ab"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .post(sms.url("/api/v1/files?name=r%C3%A9sum%C3%A9%20%22v2%22.txt"))
        .body("content")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .get(sms.url(&format!("/api/v1/files/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"r_sum_ _v2_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.txt"
    );
}

#[tokio::test]
async fn concurrent_uploads_and_deletes_of_the_same_bytes_never_diverge() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let bytes: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    // Six identical uploads at once, five times: every one succeeds.
    for _ in 0..5 {
        let uploads = (0..6).map(|_| {
            c.post(sms.url("/api/v1/files?name=same"))
                .body(bytes.clone())
                .send()
        });
        for r in futures::future::join_all(uploads).await {
            let r = r.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        }
    }
    let id: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    // An upload racing a delete of the same content: afterwards metadata and bytes agree.
    let path = sb.path().join("data/files").join(&id);
    for _ in 0..15 {
        let up = c
            .post(sms.url("/api/v1/files?name=same"))
            .body(bytes.clone())
            .send();
        let del = c.delete(sms.url(&format!("/api/v1/files/{id}"))).send();
        let (u, d) = tokio::join!(up, del);
        assert_eq!(u.unwrap().status(), StatusCode::CREATED);
        let d = d.unwrap().status();
        assert!(d == StatusCode::OK || d == StatusCode::NOT_FOUND, "{d}");
        let meta = c
            .get(sms.url(&format!("/api/v1/files/{id}/meta")))
            .send()
            .await
            .unwrap()
            .status();
        if meta == StatusCode::OK {
            assert!(path.is_file(), "metadata without bytes");
            let got = c
                .get(sms.url(&format!("/api/v1/files/{id}")))
                .send()
                .await
                .unwrap();
            assert_eq!(got.status(), StatusCode::OK);
            assert_eq!(got.bytes().await.unwrap().len(), bytes.len());
        } else {
            assert_eq!(meta, StatusCode::NOT_FOUND);
            assert!(!path.exists(), "bytes without metadata");
        }
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(sb.path().join("data/files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn the_openapi_document_lists_the_edge_answers_and_health() {
    let sb = Sandbox::new("");
    let sms = sb.start(&[]);
    let c = reqwest::Client::new();
    let doc = common::get_json(&c, &sms, "/api/openapi.json").await;
    let submit = &doc["paths"]["/api/v1/executions"]["post"]["responses"];
    for code in ["201", "400", "408", "413", "503"] {
        assert!(submit.get(code).is_some(), "submit lacks {code}: {submit}");
    }
    let get = &doc["paths"]["/api/v1/executions/{execution_id}"]["get"]["responses"];
    for code in ["200", "404", "503"] {
        assert!(get.get(code).is_some(), "get lacks {code}: {get}");
    }
    let health = &doc["paths"]["/healthz"]["get"]["responses"];
    assert!(health.get("503").is_some(), "{health}");
    // A parameter is in the path exactly when the path names it; the rest are optional queries,
    // but for SPEAR's upload header.
    let mut queries = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                let want = if in_path {
                    "path"
                } else if (method.as_str(), path.as_str(), name)
                    == ("post", "/api/v1/files", "x-file-name")
                {
                    "header"
                } else {
                    "query"
                };
                assert_eq!(p["in"], want, "{method} {path} {name}: {p}");
                assert_eq!(p["required"], in_path, "{method} {path} {name}: {p}");
                queries += usize::from(want == "query");
            }
        }
    }
    assert!(
        queries >= 9,
        "the list filters, upload name and cursor are queries"
    );
    let report = common::get_json(&c, &sms, "/healthz").await;
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["storage"], "ok");
    assert_eq!(report["scheduler"], "ok");
    assert_eq!(report["restarts"], 0);
}

#[tokio::test]
async fn a_quiet_http2_connection_is_closed_though_it_answers_pings() {
    let sb = Sandbox::new("");
    sb.write_config_with("[http]\naddr = \"127.0.0.1:0\"\nidle_timeout_secs = 2\n");
    let sms = sb.start(&[]);
    let tcp = TcpStream::connect(sms.http).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    // The driver answers the server's pings (if any) and ends when the server closes.
    let driver = tokio::spawn(conn);
    let req = axum::http::Request::get(sms.url("/healthz"))
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 200, "REST answers over HTTP/2");
    let mut body = answer.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    // Then nothing but control frames: closed after the idle timeout, so quiet HTTP/2 clients
    // cannot hold the connection cap.
    let closed = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(closed.is_ok(), "a quiet HTTP/2 connection stayed open");
}
