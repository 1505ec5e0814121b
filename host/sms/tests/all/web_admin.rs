//! The web admin in a real browser: `tests/browser/admin_token.mjs` (Playwright driving Debian's
//! chromium; `tests/browser/setup.sh`, which `run-tests.sh` calls, installs both) against a real
//! SMS with auth on.

use std::path::Path;
use std::process::Command;

use crate::common::Sandbox;

const ADMIN: &str = "browser-test-admin-token-0123456789";

#[test]
fn the_web_admin_asks_for_a_token_refuses_a_wrong_one_and_works_with_a_reader_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing: run tests/browser/setup.sh (run-tests.sh does)"
    );
    let sb = Sandbox::new(
        "enable_web_admin = true\nweb_admin_addr = \"127.0.0.1:0\"\n[auth]\nenabled = true\n",
    );
    let sms = sb.start_with_env(&[], &[("SMS_ADMIN_TOKEN", ADMIN)]);
    let admin = sms.admin.expect("the web admin is served");
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("admin_token.mjs")
        .arg(format!("http://{admin}"))
        .arg(ADMIN)
        .output()
        .expect("node runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the browser test failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stdout.matches("ok: ").count(), 5, "{stdout}");
}
