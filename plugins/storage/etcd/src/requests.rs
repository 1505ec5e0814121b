//! What a request to etcd is made of, and what its failures mean: a prefix's range end, a
//! batch reduced to the writes etcd takes, and which errors say a request was not taken, or
//! would be refused by every member.

use std::collections::HashMap;

use spear_plugin_api::storage::BatchOp;

/// Whether `e` is an answer that another member would give too (a request etcd refuses).
pub(crate) fn permanent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::OutOfRange
                | tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::ResourceExhausted
                | tonic::Code::AlreadyExists
                | tonic::Code::NotFound
        ),
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => true,
        _ => false,
    }
}

/// Whether `e` says, for certain, that the request was not taken: the member could not be
/// connected to, or has no leader to propose it to. (A connection that broke after the request
/// was sent — "connection closed before message completed", say — may have carried it.)
pub(crate) fn not_taken(e: &etcd_client::Error) -> bool {
    match e {
        // Made while building a channel, before any request.
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            [
                "error trying to connect",
                "tcp connect error",
                "Connection refused",
                "etcdserver: no leader",
                // The channel's connect timeout (it has no request timeout: `call` keeps that).
                "Timeout expired",
            ]
            .iter()
            .any(|m| message.contains(m))
                && matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                )
        }
        _ => false,
    }
}

/// Whether `e` is an answer too large to decode (a scan page of large values).
pub(crate) fn too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::OutOfRange)
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix;
/// `\0`, "to the end", when there is none).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("not empty") += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// A batch's writes with only the last write of each key (etcd refuses a transaction that
/// writes a key twice; applied in order, only the last one counts anyway).
pub(crate) fn last_writes(ops: &[BatchOp]) -> Vec<&BatchOp> {
    let mut last: HashMap<&[u8], usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => {
                last.insert(key, i);
            }
            BatchOp::Check { .. } => {}
        }
    }
    ops.iter()
        .enumerate()
        .filter(|(i, op)| match op {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => {
                last.get(key.as_slice()) == Some(i)
            }
            BatchOp::Check { .. } => false,
        })
        .map(|(_, op)| op)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"spear/"), b"spear0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn only_the_last_write_of_a_key_is_sent() {
        let put = |k: &str, v: &str| BatchOp::Put {
            key: k.into(),
            value: v.into(),
        };
        let ops = [
            put("a", "1"),
            BatchOp::Check {
                key: b"a".to_vec(),
                value: None,
            },
            put("b", "1"),
            BatchOp::Delete { key: b"a".to_vec() },
            put("b", "2"),
        ];
        let kept: Vec<_> = last_writes(&ops).into_iter().cloned().collect();
        assert_eq!(
            kept,
            [BatchOp::Delete { key: b"a".to_vec() }, put("b", "2")]
        );
    }
}
