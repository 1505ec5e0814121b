//! How a [`PendingReport`] is stored: binary (a format byte, then protobuf), so that its outputs
//! take their own size, not the three to four times JSON's arrays of numbers would. Records of
//! older builds (JSON, beginning with `{`) are still read.

use prost::Message;
use spear_plugin_api::storage::BatchOp;
use spear_proto::v1;

use super::{PendingReport, WireResult};

/// The first byte of a binary record.
const BINARY: u8 = 1;

/// The stored form: the report as it goes to SMS, and what SMS is not sent with it.
#[derive(Clone, PartialEq, prost::Message)]
struct Stored {
    #[prost(message, optional, tag = "1")]
    report: Option<v1::ReportedResult>,
    #[prost(bool, tag = "2")]
    start_untold: bool,
}

impl PendingReport {
    /// The report as a batch item for SMS.
    pub fn to_wire(&self) -> v1::ReportedResult {
        v1::ReportedResult {
            execution_id: self.execution_id.clone(),
            success: self.success,
            result: self.result.clone().map(|w| v1::ExecutionResult {
                exit_code: w.exit_code,
                signal: w.signal,
                stdout: w.stdout,
                stderr: w.stderr,
                stdout_truncated: w.stdout_truncated,
                stderr_truncated: w.stderr_truncated,
                duration_ms: w.duration_ms,
                ..Default::default()
            }),
            error: self.error.clone(),
            attempt: self.attempt,
            preempted: self.preempted,
            checkpoint: self.checkpoint.clone(),
        }
    }

    /// The stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = Stored {
            report: Some(self.to_wire()),
            start_untold: self.start_untold,
        };
        let mut out = Vec::with_capacity(1 + stored.encoded_len());
        out.push(BINARY);
        stored
            .encode(&mut out)
            .expect("a Vec grows to take the message");
        out
    }

    /// A report from its stored bytes (binary, or JSON from an older build).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        match bytes.first() {
            Some(&BINARY) => {
                let stored = Stored::decode(&bytes[1..]).map_err(|e| e.to_string())?;
                let r = stored.report.unwrap_or_default();
                Ok(Self {
                    execution_id: r.execution_id,
                    success: r.success,
                    result: r.result.map(|x| WireResult {
                        exit_code: x.exit_code,
                        signal: x.signal,
                        stdout: x.stdout,
                        stderr: x.stderr,
                        stdout_truncated: x.stdout_truncated,
                        stderr_truncated: x.stderr_truncated,
                        duration_ms: x.duration_ms,
                    }),
                    error: r.error,
                    start_untold: stored.start_untold,
                    attempt: r.attempt,
                    preempted: r.preempted,
                    checkpoint: r.checkpoint,
                })
            }
            Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            _ => Err("not a stored report (unknown format)".into()),
        }
    }

    /// A put of the report at `key`, for [`Store::batch`](super::Store::batch).
    pub fn put_op(&self, key: &str) -> BatchOp {
        BatchOp::Put {
            key: key.as_bytes().to_vec(),
            value: self.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> PendingReport {
        PendingReport {
            execution_id: "e1".into(),
            success: false,
            result: Some(WireResult {
                exit_code: 3,
                signal: 0,
                stdout: vec![0xff; 10_000],
                stderr: b"boom".to_vec(),
                stdout_truncated: true,
                stderr_truncated: false,
                duration_ms: 12,
            }),
            error: "exit 3".into(),
            start_untold: true,
            attempt: 2,
            preempted: true,
            checkpoint: b"PK-not-really".to_vec(),
        }
    }

    #[test]
    fn a_report_is_stored_binary_at_about_its_outputs_size_and_read_back_whole() {
        let r = report();
        let bytes = r.to_bytes();
        assert_eq!(bytes[0], BINARY);
        assert!(bytes.len() < 10_100, "{} bytes", bytes.len());
        let json = serde_json::to_vec(&r).unwrap();
        assert!(json.len() > 3 * bytes.len(), "JSON takes {}", json.len());
        assert_eq!(PendingReport::from_bytes(&bytes).unwrap(), r);
    }

    #[test]
    fn a_json_record_of_an_older_build_is_read_and_garbage_refused() {
        let r = report();
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(PendingReport::from_bytes(&json).unwrap(), r);
        assert!(PendingReport::from_bytes(b"").is_err());
        assert!(PendingReport::from_bytes(&[BINARY, 0xff, 0xff]).is_err());
        assert!(PendingReport::from_bytes(b"x").is_err());
    }
}
