//! `spear --ca` / `SPEAR_CA` against a real `sms` whose REST API is under TLS (with auth on):
//! the right CA connects, another CA or none is refused with the reason, and `--ca` with a plain
//! `http://` address is a usage error.

use std::process::{Child, Command, Stdio};

use spear_tests::certs::Ca;
use spear_tests::guest;
use spear_tests::process::{field, first_line};

use crate::common::{Run, finish, sibling, spear, write};

const ADMIN: &str = "bootstrap-admin-token-for-the-tls-00001";

struct Secured {
    dir: tempfile::TempDir,
    http: std::net::SocketAddr,
    sms: Child,
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = self.sms.kill();
        let _ = self.sms.wait();
    }
}

fn sms_under_tls(ca: &Ca) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(guest("native", "redb.so"), plugins.join("redb.so")).unwrap();
    std::fs::copy(
        guest("component", "least-connections.wasm"),
        plugins.join("least-connections.wasm"),
    )
    .unwrap();
    ca.server(&["127.0.0.1"])
        .write(&dir.path().join("sms.pem"), &dir.path().join("sms-key.pem"));
    let config = write(
        dir.path(),
        "sms.toml",
        "[http]\naddr = \"127.0.0.1:0\"\nenable_tls = true\n[grpc]\naddr = \"127.0.0.1:0\"\n\
         [auth]\nenabled = true\n[tls]\ncert_file = \"sms.pem\"\nkey_file = \"sms-key.pem\"\n\
         [database]\ndb_type = \"redb\"\npath = \"sms-data/sms.redb\"\n\
         [plugins]\ndir = \"plugins\"\n[scheduler]\nstrategy = \"least-connections\"\n",
    );
    let mut sms = Command::new(sibling("sms"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(config)
        .env("SMS_LOG", "error")
        .env("SMS_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut sms);
    Secured {
        http: field(&line, "http"),
        dir,
        sms,
    }
}

fn run(url: &str, ca: Option<&std::path::Path>, args: &[&str]) -> Run {
    let mut c = spear();
    c.env_remove("SPEAR_CA")
        .env("SPEAR_TOKEN", ADMIN)
        .arg("--sms")
        .arg(url);
    if let Some(ca) = ca {
        c.arg("--ca").arg(ca);
    }
    finish(c.args(args))
}

#[test]
fn the_cli_verifies_sms_against_the_given_ca() {
    let (ca, other) = (Ca::new("spear test CA"), Ca::new("another CA"));
    let s = sms_under_tls(&ca);
    let (ca_file, other_file) = (s.dir.path().join("ca.pem"), s.dir.path().join("other.pem"));
    ca.write(&ca_file);
    other.write(&other_file);
    let url = format!("https://{}", s.http);

    let ok = run(
        &url,
        Some(&ca_file),
        &["--output", "json", "token", "whoami"],
    )
    .ok();
    assert_eq!(ok.json()["role"], "admin", "{ok:?}");

    // SPEAR_CA does the same.
    let mut c = spear();
    c.env("SPEAR_CA", &ca_file)
        .env("SPEAR_TOKEN", ADMIN)
        .args(["--sms", &url, "node", "list"]);
    finish(&mut c).ok();

    for (ca, why) in [
        (Some(other_file.as_path()), "another CA"),
        (None, "the system's roots"),
    ] {
        let r = run(&url, ca, &["node", "list"]);
        assert_ne!(r.code, Some(0), "{why}: {r:?}");
        assert!(
            r.stderr.contains("certificate") || r.stderr.contains("UnknownIssuer"),
            "{why}: {r:?}"
        );
    }

    let r = run(
        &format!("http://{}", s.http),
        Some(&ca_file),
        &["node", "list"],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("https://"), "{r:?}");
}
