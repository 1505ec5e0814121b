//! `spear --sms` with the addresses of SMS replicas on etcd: an address that does not answer is
//! skipped, and a standby's redirect is followed to the leader with the token.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use spear_tests::etcd::EtcdCluster;

use crate::common::{LoneSms, closed_port, finish, spear};

const ADMIN: &str = "bootstrap-admin-token-for-the-cli-000002";

/// The role `/healthz` of the SMS at `addr` states (open without a token here).
fn role(addr: std::net::SocketAddr) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()["role"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_cli_skips_a_dead_address_and_follows_a_standby_to_the_leader_with_its_token() {
    let etcd = EtcdCluster::start(1);
    let sections = "[auth]\nenabled = true\nopen_healthz = true\n";
    let env = [("SMS_ADMIN_TOKEN", ADMIN)];
    let leader = LoneSms::on_etcd(
        tempfile::tempdir().unwrap(),
        sections,
        &env,
        &etcd.endpoints(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while role(leader.http) != "leader" {
        assert!(Instant::now() < deadline, "the first SMS never led");
        std::thread::sleep(Duration::from_millis(50));
    }
    let standby = LoneSms::on_etcd(
        tempfile::tempdir().unwrap(),
        sections,
        &env,
        &etcd.endpoints(),
    );
    while role(standby.http) != "follower" {
        assert!(Instant::now() < deadline, "the second SMS never stood by");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sms = format!("http://{},http://{}", closed_port(), standby.http);
    let run = finish(
        spear()
            .args(["--sms", &sms, "--token", ADMIN, "--output", "json"])
            .args(["token", "list"]),
    );
    // Auth is on: the answer came from the leader, to the token.
    let run = run.ok();
    assert!(run.json()["tokens"].is_array(), "{}", run.json());
    // Alone, the standby's address still works: its redirect is followed.
    let alone = finish(
        spear()
            .args([
                "--sms",
                &format!("http://{}", standby.http),
                "--token",
                ADMIN,
            ])
            .args(["--output", "json", "token", "list"]),
    );
    alone.ok();
}
