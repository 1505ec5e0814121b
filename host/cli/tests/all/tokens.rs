//! `spear --token` / `SPEAR_TOKEN` and `spear token …` against a real `sms` with auth on.

use crate::common::{LoneSms, Run, finish, spear};

const ADMIN: &str = "bootstrap-admin-token-for-the-cli-000001";

struct Secured {
    url: String,
    _sms: LoneSms,
}

fn secured_sms() -> Secured {
    let sms = LoneSms::start(
        tempfile::tempdir().unwrap(),
        "[auth]\nenabled = true\n",
        &[("SMS_ADMIN_TOKEN", ADMIN)],
    );
    Secured {
        url: format!("http://{}", sms.http),
        _sms: sms,
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
