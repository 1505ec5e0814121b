//! Entry points of the fuzz targets (`fuzz/`, run with `cargo fuzz`) and of the test that replays
//! their committed corpora on every `cargo test`. Each takes arbitrary bytes, decodes them as a
//! client or an operator would send them, and runs the checks the server runs before it stores
//! anything. Whatever the bytes, each must return: a panic is a bug.

use std::collections::BTreeMap;

use prost::Message;
use spear_proto::v1;

use crate::checks::check_labels;
use crate::config::SmsConfig;
use crate::executions::Submit;
use crate::nodes::{Heartbeat, RegisterNode, UpdateNode};
use crate::tasks::RegisterTask;

fn labels(maps: &[(&str, &BTreeMap<String, String>)]) {
    for (field, m) in maps {
        let _ = check_labels(field, m);
    }
}

/// The REST JSON bodies: decoded as each request type, then checked.
pub fn rest_json(data: &[u8]) {
    if let Ok(mut s) = serde_json::from_slice::<Submit>(data) {
        let _ = s.check();
    }
    if let Ok(t) = serde_json::from_slice::<RegisterTask>(data) {
        let _ = t.check();
    }
    if let Ok(n) = serde_json::from_slice::<RegisterNode>(data) {
        let _ = n.ip_address.parse::<std::net::IpAddr>();
        let _ = u16::try_from(n.port);
        labels(&[("labels", &n.labels), ("metadata", &n.metadata)]);
    }
    if let Ok(h) = serde_json::from_slice::<Heartbeat>(data) {
        labels(&[("health_info", &h.health_info)]);
    }
    if let Ok(u) = serde_json::from_slice::<UpdateNode>(data) {
        let empty = BTreeMap::new();
        labels(&[
            ("labels", u.labels.as_ref().unwrap_or(&empty)),
            ("metadata", u.metadata.as_ref().unwrap_or(&empty)),
        ]);
    }
}

/// The gRPC request messages: decoded with the same codec as the server, converted as the
/// server converts them, then checked.
pub fn protobuf(data: &[u8]) {
    if let Ok(r) = v1::SubmitRequest::decode(data)
        && let Ok(mut s) = crate::api::grpc::submit_from_wire(r)
    {
        let _ = s.check();
    }
    if let Ok(r) = v1::RegisterTaskRequest::decode(data) {
        let _ = crate::api::grpc::task_from_wire(r).check();
    }
    let _ = v1::RegisterNodeRequest::decode(data);
    let _ = v1::HeartbeatRequest::decode(data);
    let _ = v1::UpdateNodeRequest::decode(data);
    let _ = v1::ReportResultRequest::decode(data);
    let _ = v1::ReportStateRequest::decode(data);
    let _ = v1::AssignmentsRequest::decode(data);
    let _ = v1::UploadRequest::decode(data);
    let _ = v1::SubscribeRequest::decode(data);
}

/// A config file: SMS's own keys, then the plugin sections through the plugin runtime's checks.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = SmsConfig::parse(text) {
        let _ = config.runtime_config();
    }
}

/// Every file of a directory (`fuzz/seeds/<target>/`, `fuzz/corpus/<target>/`) through `run`;
/// returns how many.
pub fn replay(corpus: &std::path::Path, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus).into_iter().flatten().flatten() {
        if let Ok(data) = std::fs::read(entry.path()) {
            run(&data);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(kind: &str, target: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz")
            .join(kind)
            .join(target)
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        std::fs::read(dir("seeds", target).join(name)).unwrap()
    }

    #[test]
    fn the_committed_corpora_replay_without_a_panic() {
        for (target, run) in [
            ("rest_json", rest_json as fn(&[u8])),
            ("protobuf", protobuf),
            ("config_toml", config_toml),
        ] {
            let seeds = replay(&dir("seeds", target), run);
            assert!(seeds >= 5, "fuzz/seeds/{target} holds {seeds} inputs");
            let found = replay(&dir("corpus", target), run);
            assert!(found >= 100, "fuzz/corpus/{target} holds {found} inputs");
        }
    }

    #[test]
    fn the_decoders_see_the_seeds() {
        // The seeds reach the checks (not only the JSON parser): the README's task passes them,
        // the hostile submission does not.
        let task: RegisterTask =
            serde_json::from_slice(&seed("rest_json", "task-readme.json")).unwrap();
        assert!(task.check().is_ok());
        let mut huge: Submit =
            serde_json::from_slice(&seed("rest_json", "submit-huge.json")).unwrap();
        assert!(huge.check().is_err());
        // SPEAR's README listens on 0.0.0.0: since issue 10 that needs auth on (or --insecure).
        let text = String::from_utf8(seed("config_toml", "readme.toml")).unwrap();
        let refused = SmsConfig::parse(&text).unwrap_err().to_string();
        assert!(refused.contains("--insecure"), "{refused}");
        assert!(SmsConfig::parse(&format!("{text}[auth]\nenabled = true\n")).is_ok());
        let text = String::from_utf8(seed("config_toml", "limits.toml")).unwrap();
        assert!(SmsConfig::parse(&text).is_err());
    }
}
