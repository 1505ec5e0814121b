//! `spear --token` / `SPEAR_TOKEN` and `spear token …` against a real `sms` with auth on.

use std::process::{Child, Command, Stdio};

use spear_tests::guest;
use spear_tests::process::{field, first_line};

use crate::common::{Run, finish, sibling, spear, write};

const ADMIN: &str = "bootstrap-admin-token-for-the-cli-000001";

struct Secured {
    _dir: tempfile::TempDir,
    url: String,
    sms: Child,
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = self.sms.kill();
        let _ = self.sms.wait();
    }
}

fn secured_sms() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(guest("native", "redb.so"), plugins.join("redb.so")).unwrap();
    std::fs::copy(
        guest("component", "least-connections.wasm"),
        plugins.join("least-connections.wasm"),
    )
    .unwrap();
    let config = write(
        dir.path(),
        "sms.toml",
        "[http]\naddr = \"127.0.0.1:0\"\n[grpc]\naddr = \"127.0.0.1:0\"\n[auth]\nenabled = true\n\
         [database]\ndb_type = \"redb\"\npath = \"sms-data/sms.redb\"\n\
         [plugins]\ndir = \"plugins\"\n[scheduler]\nstrategy = \"least-connections\"\n",
    );
    let mut sms = Command::new(sibling("sms"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(config)
        .env("SMS_LOG", "warn")
        .env("SMS_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut sms);
    let http: std::net::SocketAddr = field(&line, "http");
    Secured {
        _dir: dir,
        url: format!("http://{http}"),
        sms,
    }
}

fn run(s: &Secured, token: Option<&str>, args: &[&str]) -> Run {
    let mut c = spear();
    c.env_remove("SPEAR_TOKEN").arg("--sms").arg(&s.url);
    if let Some(t) = token {
        c.env("SPEAR_TOKEN", t);
    }
    finish(c.args(args))
}

#[test]
fn tokens_are_made_used_listed_and_revoked_through_the_cli() {
    let s = secured_sms();
    let none = run(&s, None, &["task", "list"]);
    assert_eq!(none.code, Some(1), "{none:?}");
    assert!(none.stderr.contains("needs a token"), "{none:?}");
    assert!(none.stderr.contains("--token"), "{none:?}");

    let made = run(
        &s,
        None,
        &[
            "--token", ADMIN, "token", "create", "--role", "operator", "--name", "ci",
        ],
    )
    .ok();
    let op = made.stdout.trim().to_owned();
    assert!(op.starts_with("spear."), "{made:?}");
    assert!(made.stderr.contains("shown only now"), "{made:?}");

    let who = run(&s, Some(&op), &["--output", "json", "token", "whoami"])
        .ok()
        .json();
    assert_eq!(
        (who["name"].as_str(), who["role"].as_str()),
        (Some("ci"), Some("operator"))
    );
    run(&s, Some(&op), &["task", "list"]).ok();
    let denied = run(&s, Some(&op), &["token", "list"]);
    assert_eq!(denied.code, Some(1));
    assert!(denied.stderr.contains("needs admin"), "{denied:?}");

    let list = run(&s, Some(ADMIN), &["--output", "json", "token", "list"]).ok();
    let rows = list.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "ci");
    assert!(
        !list.stdout.contains(op.rsplit('.').next().unwrap()),
        "no secrets listed"
    );
    let text = run(&s, Some(ADMIN), &["token", "list"]).ok();
    assert!(
        text.stdout.contains("ci") && text.stdout.contains("operator"),
        "{text:?}"
    );

    run(&s, Some(ADMIN), &["token", "revoke", "ci"]).ok();
    let after = run(&s, Some(&op), &["task", "list"]);
    assert_eq!(after.code, Some(1));
    assert!(after.stderr.contains("invalid token"), "{after:?}");
    let missing = run(&s, Some(ADMIN), &["token", "revoke", "ci"]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("spear token list"), "{missing:?}");
}
