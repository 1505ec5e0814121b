//! The worker protocol's messages (docs/workers.md), shared by the executors whose instances are
//! workers: the `process` executor speaks it over a worker's pipes, the `container` executor over
//! a container's attached standard input and output.
//!
//! Every message is two frames: a JSON header, then the payload bytes, each preceded by its
//! length as four bytes, big-endian. The worker announces itself with `{"ready": true,
//! "protocol": 1}` (and an empty payload); each request is `{"id", "function"}` + payload and is
//! answered `{"id", "ok": true}` + result or `{"id", "ok": false, "error"}` + empty payload. A
//! request that says `"stream": true` may first get pieces of its output, each `{"id", "chunk":
//! true}` + the piece, before its answer (whose result is the rest of the output).
//!
//! This module holds what does not depend on the transport: encoding a request, checking a hello
//! and an answer, and [`Frames`], which cuts a byte stream into bounded frames.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::executor::InvokeFailure;

/// The protocol version hosts speak.
pub const PROTOCOL: u32 = 1;

/// Largest header frame accepted.
pub const MAX_HEADER: usize = 64 * 1024;

/// Longest function name sent.
pub const MAX_FUNCTION_NAME: usize = 256;

/// Why an invocation (or a start) of a worker has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// The function answered an error; the worker stays ready.
    #[error("the function failed: {0}")]
    Function(String),
    /// The worker could not be started, or did not announce itself.
    #[error("the worker did not start: {0}")]
    Start(String),
    /// The worker exited or closed its output.
    #[error("the worker died: {0}")]
    Died(String),
    /// The worker wrote something the protocol does not allow.
    #[error("the worker broke the protocol: {0}")]
    Protocol(String),
    /// The deadline passed; the worker was killed.
    #[error("the invocation ran past its deadline of {0:?}")]
    Deadline(Duration),
    /// The worker was already in error.
    #[error("the worker is in error: {0}")]
    Broken(String),
    /// The payload is larger than the limit (the worker stays ready).
    #[error("a payload of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The function name is empty or longer than [`MAX_FUNCTION_NAME`] (the worker stays ready).
    #[error("a function name is 1 to {MAX_FUNCTION_NAME} bytes")]
    BadName,
}

impl From<WorkerError> for InvokeFailure {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Function(m) => Self::Function(m),
            e @ (WorkerError::TooLarge(_) | WorkerError::BadName) => Self::Refused(e.to_string()),
            e @ WorkerError::Deadline(_) => Self::Deadline(e.to_string()),
            e @ (WorkerError::Start(_)
            | WorkerError::Died(_)
            | WorkerError::Protocol(_)
            | WorkerError::Broken(_)) => Self::Lost(e.to_string()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Request<'a> {
    id: u64,
    function: &'a str,
    /// Pieces of output may come before the answer (absent, not `false`, when not: a worker
    /// written before pieces existed sees the request it always saw).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    ready: bool,
    protocol: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    id: u64,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    chunk: bool,
}

pub use crate::executor::Sink;

/// What a worker sent for a request: a piece of its output, or its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A piece of the output (only to a request that asked for them).
    Piece(Vec<u8>),
    /// The answer: the (rest of the) output.
    Done(Vec<u8>),
}

/// Request `id`: `function` on `payload`, both frames in one buffer; `stream`: pieces of output
/// may come before the answer. Refused (the worker stays ready) when the payload is over
/// `max_payload` or the function name empty or too long.
pub fn request(
    id: u64,
    function: &str,
    payload: &[u8],
    max_payload: usize,
    stream: bool,
) -> Result<Vec<u8>, WorkerError> {
    if payload.len() > max_payload || u32::try_from(payload.len()).is_err() {
        return Err(WorkerError::TooLarge(payload.len()));
    }
    if function.is_empty() || function.len() > MAX_FUNCTION_NAME {
        return Err(WorkerError::BadName);
    }
    let header = serde_json::to_vec(&Request {
        id,
        function,
        stream,
    })
    .map_err(|e| WorkerError::Protocol(e.to_string()))?;
    let mut out = Vec::with_capacity(8 + header.len() + payload.len());
    for frame in [&header[..], payload] {
        // Both fit in a u32: the header is short, the payload was checked above.
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(frame);
    }
    Ok(out)
}

/// Check a worker's first message: a hello of [`PROTOCOL`] with an empty payload.
pub fn hello(header: &[u8], payload: &[u8]) -> Result<(), WorkerError> {
    if !payload.is_empty() {
        return Err(WorkerError::Protocol("its hello carries a payload".into()));
    }
    match serde_json::from_slice::<Hello>(header) {
        Ok(Hello {
            ready: true,
            protocol: PROTOCOL,
        }) => Ok(()),
        Ok(h) => Err(WorkerError::Protocol(format!(
            "it speaks protocol {} (ready {}); this host speaks {PROTOCOL}",
            h.protocol, h.ready
        ))),
        Err(e) => Err(WorkerError::Protocol(format!(
            "its first message is not a hello: {e}"
        ))),
    }
}

/// Check the answer to request `id`: its result, the function's own error
/// ([`WorkerError::Function`], the worker stays ready), or a [`WorkerError::Protocol`] (a piece
/// of output among them: only [`reply`] takes pieces).
pub fn answer(id: u64, header: &[u8], body: Vec<u8>) -> Result<Vec<u8>, WorkerError> {
    match reply(id, header, body, false)? {
        Reply::Done(out) => Ok(out),
        Reply::Piece(_) => unreachable!("refused by reply without stream"),
    }
}

/// Check a message a worker sent for request `id`: a piece of output (only when `stream`, the
/// request having asked for them), its answer's result, the function's own error
/// ([`WorkerError::Function`], the worker stays ready), or a [`WorkerError::Protocol`].
pub fn reply(id: u64, header: &[u8], body: Vec<u8>, stream: bool) -> Result<Reply, WorkerError> {
    let answer: Answer = serde_json::from_slice(header).map_err(|e| {
        WorkerError::Protocol(format!(
            "an answer that is not {{id, ok, error}} or {{id, chunk}}: {e}"
        ))
    })?;
    if answer.id != id {
        return Err(WorkerError::Protocol(format!(
            "answered request {} to request {id}",
            answer.id
        )));
    }
    if answer.chunk {
        return match (stream, answer.ok, answer.error) {
            (true, None, None) => Ok(Reply::Piece(body)),
            (false, ..) => Err(WorkerError::Protocol(
                "a piece of output to a request that asked for none".into(),
            )),
            _ => Err(WorkerError::Protocol(
                "a piece of output that carries ok or error".into(),
            )),
        };
    }
    match (answer.ok, answer.error) {
        (Some(true), None) => Ok(Reply::Done(body)),
        (Some(false), Some(error)) if body.is_empty() => Err(WorkerError::Function(error)),
        (Some(true), Some(_)) => Err(WorkerError::Protocol(
            "a success that carries an error".into(),
        )),
        (Some(false), None) => Err(WorkerError::Protocol("a failure without its error".into())),
        (Some(false), Some(_)) => Err(WorkerError::Protocol(
            "a failure that carries a payload".into(),
        )),
        (None, _) => Err(WorkerError::Protocol(
            "an answer without ok (and not a piece of output)".into(),
        )),
    }
}

/// Buffer kept between messages (more is given back once a message is taken).
const KEEP: usize = 64 * 1024;

/// One message: its header frame and its payload frame.
pub type Message = (Vec<u8>, Vec<u8>);

/// Cuts a byte stream that arrives in pieces into messages (header frame, payload frame), each
/// frame within its limit: a frame announced over its limit is a protocol error at once, before
/// its bytes arrive, so what is buffered stays below one message's limits plus one piece.
#[derive(Debug)]
pub struct Frames {
    buf: VecDeque<u8>,
    max_payload: usize,
}

impl Frames {
    /// A decoder whose payload frames are at most `max_payload` bytes (headers
    /// [`MAX_HEADER`]).
    pub fn new(max_payload: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            max_payload,
        }
    }

    /// Bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
    }

    /// Bytes buffered and not yet taken as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `None` while more bytes are needed; an error for a frame over its
    /// limit.
    pub fn next_message(&mut self) -> Result<Option<Message>, WorkerError> {
        let Some(header_len) = self.length_at(0, MAX_HEADER)? else {
            return Ok(None);
        };
        let Some(body_len) = self.length_at(4 + header_len, self.max_payload)? else {
            return Ok(None);
        };
        if self.buf.len() < 8 + header_len + body_len {
            return Ok(None);
        }
        self.buf.drain(..4);
        let header: Vec<u8> = self.buf.drain(..header_len).collect();
        self.buf.drain(..4);
        let body: Vec<u8> = self.buf.drain(..body_len).collect();
        // A large message leaves no large buffer behind for the worker's whole life.
        if self.buf.capacity() > KEEP && self.buf.len() <= KEEP {
            self.buf.shrink_to(KEEP);
        }
        Ok(Some((header, body)))
    }

    /// The frame length announced at `at`, if its four bytes are here.
    fn length_at(&self, at: usize, max: usize) -> Result<Option<usize>, WorkerError> {
        if self.buf.len() < at + 4 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        for (i, b) in len.iter_mut().enumerate() {
            *b = self.buf[at + i];
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            return Err(WorkerError::Protocol(format!(
                "a frame of {len} bytes (at most {max} here)"
            )));
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(header: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in [header, body] {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn a_request_is_two_frames_and_refuses_what_it_must() {
        let bytes = request(7, "echo", b"hi", 16, false).unwrap();
        let mut frames = Frames::new(16);
        frames.push(&bytes);
        let (h, b) = frames.next_message().unwrap().unwrap();
        assert_eq!(h, br#"{"id":7,"function":"echo"}"#);
        assert_eq!(b, b"hi");
        assert_eq!(
            request(1, "f", &[0; 17], 16, false),
            Err(WorkerError::TooLarge(17))
        );
        assert_eq!(request(1, "", b"", 16, false), Err(WorkerError::BadName));
        assert_eq!(
            request(1, &"f".repeat(257), b"", 16, false),
            Err(WorkerError::BadName)
        );
        let mut frames = Frames::new(16);
        frames.push(&request(8, "f", b"", 16, true).unwrap());
        let (h, _) = frames.next_message().unwrap().unwrap();
        assert_eq!(h, br#"{"id":8,"function":"f","stream":true}"#);
    }

    #[test]
    fn frames_arrive_in_pieces_and_are_bounded() {
        let bytes = [message(b"{}", b"abc"), message(b"{\"x\":1}", b"")].concat();
        let mut frames = Frames::new(8);
        for byte in &bytes[..bytes.len() - 1] {
            frames.push(std::slice::from_ref(byte));
        }
        assert_eq!(
            frames.next_message().unwrap(),
            Some((b"{}".to_vec(), b"abc".to_vec()))
        );
        assert_eq!(frames.next_message().unwrap(), None);
        frames.push(&bytes[bytes.len() - 1..]);
        assert_eq!(
            frames.next_message().unwrap(),
            Some((b"{\"x\":1}".to_vec(), vec![]))
        );
        assert_eq!(frames.buffered(), 0);
        // The buffer of a large message is given back.
        let mut frames = Frames::new(1 << 20);
        frames.push(&message(b"{}", &vec![7; 1 << 20]));
        assert_eq!(frames.next_message().unwrap().unwrap().1.len(), 1 << 20);
        assert!(frames.buf.capacity() <= KEEP, "{}", frames.buf.capacity());
        // A payload frame announced over the limit is refused before its bytes arrive.
        let mut frames = Frames::new(8);
        frames.push(&message(b"{}", b"")[..6]);
        frames.push(&9u32.to_be_bytes());
        assert!(matches!(
            frames.next_message(),
            Err(WorkerError::Protocol(_))
        ));
        let mut frames = Frames::new(8);
        frames.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            frames.next_message(),
            Err(WorkerError::Protocol(_))
        ));
    }

    #[test]
    fn hellos_and_answers_are_checked() {
        assert_eq!(hello(br#"{"ready":true,"protocol":1}"#, b""), Ok(()));
        assert!(hello(br#"{"ready":true,"protocol":2}"#, b"").is_err());
        assert!(hello(br#"{"ready":true,"protocol":1}"#, b"x").is_err());
        assert!(hello(br#"{"ready":true,"protocol":1,"more":1}"#, b"").is_err());
        assert_eq!(
            answer(3, br#"{"id":3,"ok":true}"#, b"r".to_vec()),
            Ok(b"r".to_vec())
        );
        assert_eq!(
            answer(3, br#"{"id":3,"ok":false,"error":"no"}"#, vec![]),
            Err(WorkerError::Function("no".into()))
        );
        for (header, body) in [
            (&br#"{"id":4,"ok":true}"#[..], &b""[..]),
            (br#"{"id":3,"ok":true,"error":"e"}"#, b""),
            (br#"{"id":3,"ok":false}"#, b""),
            (br#"{"id":3,"ok":false,"error":"e"}"#, b"x"),
            (b"garbage", b""),
        ] {
            assert!(
                matches!(
                    answer(3, header, body.to_vec()),
                    Err(WorkerError::Protocol(_))
                ),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn pieces_of_output_come_only_to_a_request_that_asked() {
        assert_eq!(
            reply(5, br#"{"id":5,"chunk":true}"#, b"ab".to_vec(), true),
            Ok(Reply::Piece(b"ab".to_vec()))
        );
        assert_eq!(
            reply(5, br#"{"id":5,"ok":true}"#, b"c".to_vec(), true),
            Ok(Reply::Done(b"c".to_vec()))
        );
        for (header, stream) in [
            (&br#"{"id":5,"chunk":true}"#[..], false),
            (br#"{"id":5,"chunk":true,"ok":true}"#, true),
            (br#"{"id":5,"chunk":true,"error":"e"}"#, true),
            (br#"{"id":6,"chunk":true}"#, true),
            (br#"{"id":5}"#, true),
        ] {
            assert!(
                matches!(
                    reply(5, header, b"x".to_vec(), stream),
                    Err(WorkerError::Protocol(_))
                ),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        assert!(matches!(
            answer(5, br#"{"id":5,"chunk":true}"#, vec![]),
            Err(WorkerError::Protocol(_))
        ));
    }

    #[test]
    fn failures_map_to_what_the_host_does_with_the_instance() {
        assert!(!InvokeFailure::from(WorkerError::Function("x".into())).instance_lost());
        assert!(!InvokeFailure::from(WorkerError::TooLarge(1)).instance_lost());
        assert!(InvokeFailure::from(WorkerError::Deadline(Duration::from_secs(1))).instance_lost());
        assert!(InvokeFailure::from(WorkerError::Protocol("x".into())).instance_lost());
    }
}
