//! Three SMS processes on one three-member etcd cluster ([`spear_sms::ha`]): one leads and the
//! others redirect to it; the leader `kill -9`ed while submits stream in, another leads within
//! the lease TTL + 1 s and every acknowledged submit finishes; a leader stopped (SIGSTOP) past
//! its lease and woken writes nothing and stops.

use crate::common::{self, Sandbox, Sms};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spear_proto::v1;
use spear_tests::etcd::EtcdCluster;

/// The lease TTL of the replicas, seconds.
const TTL: u64 = 2;

/// What replica `sms` says it is on `/healthz` (`None`: no answer within a second).
async fn role(c: &reqwest::Client, sms: &Sms) -> Option<String> {
    let r = c
        .get(sms.url("/healthz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    let v: Value = r.json().await.ok()?;
    v["role"].as_str().map(str::to_owned)
}

/// The index of the one replica that leads, waiting for it up to `within`.
async fn leader(c: &reqwest::Client, replicas: &[Option<Sms>], within: Duration) -> usize {
    leader_but(c, replicas, None, within).await
}

/// [`leader`], not asking replica `except` (one being stopped, which may still answer a last
/// request as it was).
async fn leader_but(
    c: &reqwest::Client,
    replicas: &[Option<Sms>],
    except: Option<usize>,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut leading = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if let Some(sms) = r
                && Some(i) != except
                && role(c, sms).await.as_deref() == Some("leader")
            {
                leading.push(i);
            }
        }
        if let [one] = leading[..] {
            return one;
        }
        assert!(leading.len() < 2, "two leaders at once: {leading:?}");
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How `sms` (`what`) exits, waiting for it up to 10 s.
async fn exit_of(sms: &mut Sms, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = sms.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submit `body` to the first of `urls` that acknowledges it (following redirects), trying
/// them in turn for up to 20 s; its id, or `None` when none did.
async fn submit_anywhere(c: &reqwest::Client, urls: &[String], body: &Value) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for url in urls {
            let answer = c
                .post(format!("{url}/api/v1/executions"))
                .json(body)
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            if let Ok(r) = answer
                && r.status() == 201
            {
                let e: Value = r.json().await.ok()?;
                return e["execution_id"].as_str().map(str::to_owned);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_leads_when_the_leader_dies_and_a_woken_leader_writes_nothing() {
    let cluster = EtcdCluster::start(3);
    let endpoints = cluster.endpoints();
    let extra = format!(
        "enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n[ha]\nlease_ttl_secs = {TTL}\n"
    );
    let sandboxes: Vec<Sandbox> = (0..3)
        .map(|_| Sandbox::on_etcd(&extra, &endpoints, "ha-test/"))
        .collect();
    let mut replicas: Vec<Option<Sms>> = sandboxes.iter().map(|sb| Some(sb.start(&[]))).collect();
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().url(""))
        .collect();
    let grpc: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().grpc.to_string())
        .collect();
    let c = reqwest::Client::new();
    let first = leader(&c, &replicas, Duration::from_secs(15)).await;
    let leading = replicas[first].as_ref().unwrap();

    // A follower redirects REST to the leader (307, same path) and fails gRPC naming it.
    let follower = (first + 1) % 3;
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = direct
        .get(format!("{}/api/v1/nodes?limit=5", urls[follower]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("http://{}/api/v1/nodes?limit=5", leading.http).as_str()
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_leader", "{body}");
    assert_eq!(body["leader"]["grpc"], leading.grpc.to_string(), "{body}");
    // Its web admin sends browsers to the leader's web admin.
    let standby_admin = replicas[follower].as_ref().unwrap().admin.unwrap();
    let r = direct
        .get(format!("http://{standby_admin}/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("http://{}/admin", leading.admin.unwrap()).as_str()
    );
    // Its /metrics says it does not lead (a scrape of every replica tells who does).
    let metrics = direct
        .get(format!("{}/metrics", urls[follower]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sms_leader 0"), "{metrics}");
    let metrics = common::get_text(&c, leading, "/metrics").await;
    assert!(metrics.contains("sms_leader 1"), "{metrics}");
    let mut nodes =
        v1::node_service_client::NodeServiceClient::connect(format!("http://{}", grpc[follower]))
            .await
            .unwrap();
    let refused = nodes
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains(&leading.grpc.to_string()),
        "{refused:?}"
    );

    let uuid = common::register_wasm_node(leading, 1000).await;
    let ran: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let counted = ran.clone();
    let node =
        common::follow::follow_leader(uuid, Arc::new(Mutex::new(grpc.clone())), move |_, e| {
            *counted
                .lock()
                .unwrap()
                .entry(e.execution_id.clone())
                .or_default() += 1;
        });
    let body = json!({"executable": {"type": "wasm", "uri": "file:///ha.wasm"}});
    // Through a follower: redirected, acknowledged by the leader.
    let mut acked = Vec::new();
    for _ in 0..10 {
        acked.push(
            submit_anywhere(&c, &urls[follower..=follower], &body)
                .await
                .unwrap(),
        );
    }

    // A follower answers reads of stored records itself, from storage: an execution (once it
    // finished, the same as the leader's answer), the tasks; it says who leads.
    let done = acked[0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let on_leader = loop {
        let e = common::get_json(&c, leading, &format!("/api/v1/executions/{done}")).await;
        if e["state"] == "succeeded" {
            break e;
        }
        assert!(Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = direct
        .get(format!("{}/api/v1/executions/{done}", urls[follower]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["spear-leader"],
        leading.http.to_string().as_str()
    );
    assert_eq!(r.json::<Value>().await.unwrap(), on_leader);
    let task = common::post_json(
        &c,
        leading,
        "/api/v1/tasks",
        &json!({"name": "seen", "executable": {"type": "wasm", "uri": "file:///seen.wasm"}}),
    )
    .await
    .1;
    let tasks: Value = direct
        .get(format!("{}/api/v1/tasks", urls[follower]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The standby reads what the leader registered (the registration's answer is the task
    // with SPEAR's `success` and `message` beside it).
    let mut registered = task.clone();
    for key in ["success", "message"] {
        registered.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(tasks["tasks"][0], registered, "{tasks}");
    // A write on a path it reads is redirected all the same.
    let r = direct
        .post(format!("{}/api/v1/tasks", urls[follower]))
        .json(&json!({"name": "x", "executable": {"type": "wasm", "uri": "file:///x.wasm"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("http://{}/api/v1/tasks", leading.http).as_str()
    );
    let missing = direct
        .get(format!("{}/api/v1/executions/no-such", urls[follower]))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The leader dies while submits stream in.
    let (c2, urls2, body2) = (c.clone(), urls.clone(), body.clone());
    let submitter = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..40 {
            ids.extend(submit_anywhere(&c2, &urls2, &body2).await);
        }
        ids
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    replicas[first].take().unwrap().kill_9();
    let killed = Instant::now();
    let second = leader(&c, &replicas, Duration::from_secs(TTL + 10)).await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(TTL + 1),
        "a follower led {took:?} after the leader died (lease TTL {TTL} s)"
    );
    let streamed = submitter.await.unwrap();
    assert_eq!(streamed.len(), 40, "every submit acknowledged in the end");
    acked.extend(streamed);

    // Every acknowledged submit finishes, once, on the new leader.
    let now_leading = replicas[second].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &acked {
        loop {
            let e = common::get_json(&c, now_leading, &format!("/api/v1/executions/{id}")).await;
            if e["state"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never finished: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    {
        let ran = ran.lock().unwrap();
        for id in &acked {
            assert!(ran.get(id).is_some_and(|&n| n >= 1), "{id} never ran");
        }
    }

    // The new leader is stopped past its lease: the third replica leads…
    let stopped_at = replicas[second].as_ref().unwrap();
    stopped_at.signal("STOP");
    let third = leader_but(&c, &replicas, Some(second), Duration::from_secs(TTL + 10)).await;
    // …and the old one, woken, acknowledges nothing (a write of its is fenced) and stops.
    stopped_at.signal("CONT");
    let late = direct
        .post(format!("{}/api/v1/executions", urls[second]))
        .json(&json!({"executable": {"type": "wasm", "uri": "file:///late.wasm"}}))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    if let Ok(r) = late {
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_ne!(
            status, 201,
            "a deposed leader acknowledged a submit: {text}"
        );
    }
    let mut woken = replicas[second].take().unwrap();
    let status = exit_of(&mut woken, "the deposed leader").await;
    assert_eq!(status.code(), Some(3), "{status:?}");
    let listed = common::get_json(
        &c,
        replicas[third].as_ref().unwrap(),
        "/api/v1/executions?limit=1000",
    )
    .await;
    assert!(
        !listed.to_string().contains("late.wasm"),
        "nothing of the deposed leader's landed: {listed}"
    );
    // Work goes on with the third leader: the node follows it.
    let id = submit_anywhere(&c, &urls, &body).await.unwrap();
    let path = format!("/api/v1/executions/{id}");
    crate::retention::wait_for(&c, replicas[third].as_ref().unwrap(), &path, |e| {
        e["state"] == "succeeded"
    })
    .await;
    node.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_election_key_is_gone_writes_nothing_and_stops() {
    let cluster = EtcdCluster::start(1);
    let endpoints = cluster.endpoints();
    let sb = Sandbox::on_etcd("", &endpoints, "fence-test/");
    let mut sms = sb.start(&[]).leading().await;
    let c = reqwest::Client::new();
    let body =
        |name: &str| json!({"executable": {"type": "wasm", "uri": format!("file:///{name}.wasm")}});
    let kept = common::submit(&c, &sms, &body("kept")).await;
    // The election key goes while the lease lives on (as if another SMS had won): the leader's
    // next write finds it gone, fails, and the leader stops.
    let keys = cluster.etcdctl(&["get", "--prefix", "--keys-only", "fence-test/leader"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 1, "{keys}");
    cluster.etcdctl(&["del", "--prefix", "fence-test/leader"]);
    // Refused with a 503 that says why (SMS stops half a second after it finds out, time for
    // the answer to reach the client).
    let (status, error) = common::post_json(&c, &sms, "/api/v1/executions", &body("lost")).await;
    assert_eq!(status, 503, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer leads"),
        "{error}"
    );
    let exit = exit_of(&mut sms, "the fenced leader").await;
    assert_eq!(exit.code(), Some(3), "{exit:?}");
    // The next leader has the first submit, not the second.
    let next = Sandbox::on_etcd("", &endpoints, "fence-test/");
    let sms = next.start(&[]).leading().await;
    let listed = common::get_json(&c, &sms, "/api/v1/executions").await;
    let text = listed.to_string();
    assert!(
        text.contains(&kept) && !text.contains("lost.wasm"),
        "{listed}"
    );
}

/// With `[auth]` on, a standby checks a token against its record in storage as it is now: a
/// token the leader issued works on the standby at once, and stops working there the moment the
/// leader revokes it; no token, no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_checks_tokens_against_storage_as_it_is_now() {
    let cluster = EtcdCluster::start(1);
    let endpoints = cluster.endpoints();
    let admin = "an-admin-token-long-enough-to-be-accepted";
    let extra =
        format!("[ha]\nlease_ttl_secs = {TTL}\n[auth]\nenabled = true\nopen_healthz = true\n");
    let sandboxes: Vec<Sandbox> = (0..2)
        .map(|_| Sandbox::on_etcd(&extra, &endpoints, "ha-auth/"))
        .collect();
    let replicas: Vec<Option<Sms>> = sandboxes
        .iter()
        .map(|sb| Some(sb.start_with_env(&[], &[("SMS_ADMIN_TOKEN", admin)])))
        .collect();
    let c = reqwest::Client::new();
    let first = leader(&c, &replicas, Duration::from_secs(15)).await;
    let (leading, standby) = (
        replicas[first].as_ref().unwrap(),
        replicas[1 - first].as_ref().unwrap(),
    );
    let made: Value = c
        .post(leading.url("/api/v1/tokens"))
        .bearer_auth(admin)
        .json(&json!({"name": "viewer", "role": "reader"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reader = made["token"].as_str().unwrap().to_owned();
    let tasks = |token: Option<String>| {
        let mut r = c.get(standby.url("/api/v1/tasks"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(tasks(Some(reader.clone())).await, 200);
    assert_eq!(tasks(Some(admin.to_owned())).await, 200);
    assert_eq!(tasks(None).await, 401);
    assert_eq!(tasks(Some("spear.0123456789abcdef.nope".into())).await, 401);
    let revoked = c
        .delete(leading.url(&format!("/api/v1/tokens/{}", made["id"].as_str().unwrap())))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{revoked:?}");
    assert_eq!(
        tasks(Some(reader)).await,
        401,
        "revoked on the leader: refused at once"
    );
}
