//! Signed plugins (`[plugins] require_signed`): a host that requires signatures loads only files
//! signed by a key it trusts (`FILE.sig` beside each, as `spear plugin sign` writes them); an
//! unsigned, re-signed-by-a-stranger, forged or stale-signed replacement is refused with that
//! reason, and the plugin active before keeps deciding. Real files, a real `PluginHost`.

use spear_plugin_runtime::signing::{Key, sig_path};
use spear_plugin_runtime::{Form, PluginHost, PluginState, RuntimeConfig, Trigger};
use spear_tests::{Sandbox, guest, host_config, requests, targets};

fn config(key: &Key) -> String {
    host_config(
        false,
        &format!(
            "require_signed = true\n[plugins.trusted_keys]\nrelease = \"{}\"\n\
             [scheduler]\nstrategy = \"least-connections\"\n",
            key.public()
        ),
    )
}

/// The record of the file `lc.wasm`.
fn lc(host: &PluginHost) -> spear_plugin_runtime::PluginRecord {
    host.plugins()
        .into_iter()
        .find(|r| r.file.ends_with("lc.wasm"))
        .expect("lc.wasm is listed")
}

#[test]
fn only_files_signed_by_a_trusted_key_load_and_the_old_plugin_keeps_deciding() {
    let sb = Sandbox::new();
    let key = Key::generate().unwrap();
    let lc_path = sb.install("component", "least-connections.wasm", "lc.wasm");
    std::fs::write(
        sig_path(&lc_path),
        key.sign(&std::fs::read(&lc_path).unwrap()),
    )
    .unwrap();
    // An unsigned file beside it is refused, naming why.
    let rr = sb.install("component", "round-robin.wasm", "rr.wasm");
    sb.write_config(&config(&key));
    let host = PluginHost::start(&sb.config()).unwrap();
    host.strategy().upsert(targets(4));
    let r = lc(&host);
    assert_eq!(
        (r.state, r.signed_by.as_deref()),
        (PluginState::Active, Some("release"))
    );
    let rr_record = host.plugins().into_iter().find(|r| r.file == rr).unwrap();
    assert_eq!(rr_record.state, PluginState::Failed);
    let e = rr_record.last_error.unwrap();
    assert!(
        e.contains("refused: unsigned") && e.contains("require_signed"),
        "{e}"
    );
    let before = host.strategy().active().unwrap();

    // The file replaced by another build of the plugin (the Extism form), in four bad ways.
    let next = std::fs::read(guest("extism", "least-connections.wasm")).unwrap();
    std::fs::write(&lc_path, &next).unwrap();
    let stranger = Key::generate().unwrap();
    let signed = key.sign(&next);
    let line = signed
        .lines()
        .find(|l| l.starts_with("signature "))
        .unwrap();
    let other_sig = stranger.sign(&next);
    let other_line = other_sig
        .lines()
        .find(|l| l.starts_with("signature "))
        .unwrap();
    for (sig, reason) in [
        (None, "unsigned"),
        (
            Some(key.sign(b"the old content")),
            "the signature is for content sha256",
        ),
        (
            Some(stranger.sign(&next)),
            "which is not in plugins.trusted_keys",
        ),
        (Some(signed.replace(line, other_line)), "does not verify"),
    ] {
        match &sig {
            Some(text) => std::fs::write(sig_path(&lc_path), text).unwrap(),
            None => {
                let _ = std::fs::remove_file(sig_path(&lc_path));
            }
        }
        host.rescan(Trigger::Api);
        let r = lc(&host);
        let e = r.last_error.clone().unwrap_or_default();
        assert!(e.contains(reason), "{reason}: {e}");
        assert_eq!(
            r.form,
            Some(Form::Component),
            "{reason}: the old build stays"
        );
        assert_eq!(host.strategy().active().unwrap(), before, "{reason}");
        assert!(
            host.strategy()
                .place(&requests(1, 4))
                .iter()
                .all(|d| matches!(d, spear_plugin_api::Decision::Assign(_))),
            "{reason}: the old plugin still places"
        );
    }

    // Signed by the trusted key: the new build loads; the signature alone triggered it.
    std::fs::write(sig_path(&lc_path), &signed).unwrap();
    host.rescan(Trigger::Api);
    let r = lc(&host);
    assert_eq!(r.form, Some(Form::Extism), "{r:?}");
    assert_eq!(
        (r.last_error, r.signed_by.as_deref()),
        (None, Some("release"))
    );
}

#[test]
fn signing_keys_are_checked_and_need_a_restart_to_change() {
    for (text, key) in [
        (
            "require_signed = true\n",
            "plugins.require_signed: no key is trusted",
        ),
        (
            "[plugins.trusted_keys]\nbad = \"AAAA\"\n",
            "plugins.trusted_keys.bad: public key",
        ),
    ] {
        let err = RuntimeConfig::compile(&format!("[plugins]\n{text}"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    let key = Key::generate().unwrap();
    let on = RuntimeConfig::compile(&config(&key), None).unwrap();
    let off = RuntimeConfig::compile(&host_config(false, ""), None).unwrap();
    assert!(on.signing.require && !off.signing.require);
    assert_eq!(
        on.restart_keys_changed(&off),
        vec!["plugins.require_signed / plugins.trusted_keys"]
    );
}
