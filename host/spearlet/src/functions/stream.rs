//! `InvokeStream`: an invocation whose output reaches the client as the function makes it.
//!
//! The executor hands pieces of output to a sink on its (blocking) thread; the sink never waits
//! for the client: it queues them, cut into messages of at most [`CHUNK`] bytes, and the gRPC
//! stream takes them as the client reads. So a client that reads slowly, or not at all, never
//! holds up the function, its instance or the node's limits; what waits for it is the output
//! itself, which is bounded by `spearlet.functions.max_payload_bytes` as a whole (past it the
//! sink takes no more and the stream ends with `ABORTED`). An error before any output is the
//! call's own status, as for `Invoke`; one after output has been sent ends the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use spear_proto::spearlet as pb;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tonic::Status;

use super::service::{CHUNK, ChunkStream, response};
use super::{Call, InvokeError, Pieces, invoke_streaming};
use crate::agent::Agent;

/// What goes down to the client.
enum Out {
    /// A piece of output.
    Piece(Bytes),
    /// The last message: the `done`, or the error.
    End(Result<pb::InvokeChunk, Status>),
}

impl Out {
    fn message(self) -> Result<pb::InvokeChunk, Status> {
        match self {
            Self::Piece(bytes) => Ok(pb::InvokeChunk {
                part: Some(pb::invoke_chunk::Part::Data(bytes)),
            }),
            Self::End(last) => last,
        }
    }
}

/// Run `call` for an `InvokeStream`: the stream of its messages, or the error it met before
/// any output.
pub(super) async fn invoke(agent: &Arc<Agent>, call: Call) -> Result<ChunkStream, Status> {
    let (tx, mut rx) = unbounded_channel();
    let max = agent.config.spearlet.functions.max_payload_bytes;
    let sent = Arc::new(AtomicU64::new(0));
    let pieces = pieces_to(tx.clone(), max, sent.clone());
    let agent = agent.clone();
    tokio::spawn(async move {
        let answered = invoke_streaming(&agent, &call, Some(pieces)).await;
        let end = finish(answered, sent.load(Ordering::Relaxed), max, &tx);
        let _ = tx.send(Out::End(end));
    });
    // Nothing sent yet: an error now is the call's own status.
    let first = match rx.recv().await {
        Some(Out::End(Err(status))) => return Err(status),
        Some(first) => first,
        None => return Err(Status::internal("the invocation ended without an answer")),
    };
    let rest = futures::stream::unfold(rx, |mut rx: UnboundedReceiver<Out>| async {
        rx.recv().await.map(|out| (out.message(), rx))
    });
    Ok(Box::pin(
        futures::stream::once(async move { first.message() }).chain(rest),
    ))
}

/// The last message of a stream whose executor handed over `sent` bytes in pieces: the rest of
/// the output (queued on `tx`) and the `done`, or the error; an output over `max` is an error
/// whatever the invocation's outcome (the sink took no more past it).
fn finish(
    answered: Result<super::Answer, InvokeError>,
    sent: u64,
    max: u64,
    tx: &UnboundedSender<Out>,
) -> Result<pb::InvokeChunk, Status> {
    let over = |total: u64| {
        Status::from(InvokeError::Function(format!(
            "the function's output of {total} bytes or more is over \
             spearlet.functions.max_payload_bytes ({max})"
        )))
    };
    if sent > max {
        return Err(over(sent));
    }
    let mut answer = answered?;
    let rest = Bytes::from(std::mem::take(&mut answer.output));
    let total = sent + rest.len() as u64;
    if total > max {
        return Err(over(total));
    }
    for at in (0..rest.len()).step_by(CHUNK) {
        let _ = tx.send(Out::Piece(rest.slice(at..(at + CHUNK).min(rest.len()))));
    }
    Ok(pb::InvokeChunk {
        part: Some(pb::invoke_chunk::Part::Done(response(answer))),
    })
}

/// Where an executor's pieces go: onto `tx`, in messages of at most [`CHUNK`] bytes, counted in
/// `sent`. It never waits; it wants no more once the client is gone or the output is over `max`
/// bytes (so at most `max` bytes are ever queued).
fn pieces_to(tx: UnboundedSender<Out>, max: u64, sent: Arc<AtomicU64>) -> Pieces {
    Box::new(move |bytes: &[u8]| {
        let total = sent.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        if total > max {
            return false;
        }
        bytes
            .chunks(CHUNK)
            .all(|piece| tx.send(Out::Piece(Bytes::copy_from_slice(piece))).is_ok())
    })
}
