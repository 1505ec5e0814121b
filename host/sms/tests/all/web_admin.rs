//! The web admin in a real browser: the scripts of `tests/browser/` (Playwright driving Debian's
//! chromium; `tests/browser/setup.sh`, which `run-tests.sh` calls, installs both) against a real
//! SMS: one with `[auth]` on, one as SPEAR runs it (auth off, `SMS_WEB_ADMIN_TOKEN` set).

use std::path::Path;
use std::process::Command;

use crate::common::Sandbox;

const ADMIN: &str = "browser-test-admin-token-0123456789";

/// Run `script` against the web admin of an SMS started with `config` and `env`, giving it the
/// token `token`; assert it passed all its `steps`.
fn browser(script: &str, config: &str, env: &[(&str, &str)], token: &str, steps: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing: run tests/browser/setup.sh (run-tests.sh does)"
    );
    let sb = Sandbox::new(config);
    let sms = sb.start_with_env(&[], env);
    let admin = sms.admin.expect("the web admin is served");
    let out = Command::new("node")
        .current_dir(&dir)
        .arg(script)
        .arg(format!("http://{admin}"))
        .arg(token)
        .output()
        .expect("node runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout.matches("ok: ").count(), steps, "{stdout}");
}

#[test]
fn the_web_admin_asks_for_a_token_refuses_a_wrong_one_and_works_with_a_reader_one() {
    browser(
        "admin_token.mjs",
        "enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n[auth]\nenabled = true\n",
        &[("SMS_ADMIN_TOKEN", ADMIN)],
        ADMIN,
        6,
    );
}

#[test]
fn the_readme_s_web_admin_manages_nodes_files_tasks_and_settings() {
    // As SPEAR's README runs it: auth off, the admin protected by SMS_WEB_ADMIN_TOKEN.
    let token = "spear-web-admin-token-0123456789";
    browser(
        "admin_ui.mjs",
        "enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n",
        &[("SMS_WEB_ADMIN_TOKEN", token)],
        token,
        12,
    );
}
