//! `spear --ca` / `SPEAR_CA` against a real `sms` whose REST API is under TLS (with auth on):
//! the right CA connects, another CA or none is refused with the reason, and `--ca` with a plain
//! `http://` address is a usage error.

use spear_tests::certs::Ca;

use crate::common::{LoneSms, Run, finish, spear};

const ADMIN: &str = "bootstrap-admin-token-for-the-tls-00001";

/// SMS with auth on and its REST under TLS, with a certificate of `ca` for 127.0.0.1.
fn sms_under_tls(ca: &Ca) -> LoneSms {
    let dir = tempfile::tempdir().unwrap();
    ca.server(&["127.0.0.1"])
        .write(&dir.path().join("sms.pem"), &dir.path().join("sms-key.pem"));
    LoneSms::start(
        dir,
        "[auth]\nenabled = true\n[tls]\ncert_file = \"sms.pem\"\nkey_file = \"sms-key.pem\"\n",
        &[("SMS_ADMIN_TOKEN", ADMIN), ("SMS_HTTP_ENABLE_TLS", "true")],
    )
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
