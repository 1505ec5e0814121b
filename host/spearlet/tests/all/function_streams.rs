//! `InvokeStream` of a worker's function: its output reaches the client while the function
//! runs, a client that reads nothing holds nothing up, and the whole output is bounded.
//! (Streaming of a wasm function's emitted pieces is in `functions.rs`, beside its other
//! `InvokeStream` checks.)

use serde_json::json;
use spear_proto::spearlet as pb;
use tonic::Code;

use crate::common::{Cluster, register};
use crate::functions::{call, client, python_worker};

/// `InvokeStream` of a Python worker's function streams its output while it runs: the worker sends
/// its second piece only once the file it waits for exists, and the test makes that file when it
/// has read the first piece from the stream (without streaming, the worker would answer `no
/// gate`). A client that reads nothing holds up neither the function nor its instance (the task
/// has one). An output over `max_payload_bytes` ends the stream with an error.
#[tokio::test]
async fn a_workers_output_streams_to_the_client_while_the_function_runs() {
    let c = Cluster::new();
    let sms = c.sms();
    let config = c
        .spearlet_config(
            "stream",
            "[spearlet.functions]\nmax_payload_bytes = 4000000\n",
        )
        .replace("max_instances_per_task = 4", "max_instances_per_task = 1");
    let node = c.spearlet_from("stream", &sms, &config);
    let task = register(
        &sms,
        json!({"name": "py", "executable": {"type": "process", "name": "/usr/bin/python3",
               "args": ["-u", python_worker()]}}),
    )
    .await;
    let mut f = client(&node).await;
    let gate = c.path().join("gate");
    let mut stream = f
        .invoke_stream(call(&task, "lines", gate.display().to_string().as_bytes()))
        .await
        .unwrap()
        .into_inner();
    let (mut pieces, mut done) = (Vec::new(), None);
    while let Some(chunk) = stream.message().await.unwrap() {
        match chunk.part.unwrap() {
            pb::invoke_chunk::Part::Data(d) => {
                if pieces.is_empty() {
                    std::fs::write(&gate, b"").unwrap();
                }
                pieces.push(String::from_utf8(d.to_vec()).unwrap());
            }
            pb::invoke_chunk::Part::Done(r) => done = Some(r),
        }
    }
    assert_eq!(pieces, ["first", "second", "end"]);
    let done = done.expect("a done message ends the stream");
    assert!(done.output.is_empty(), "{done:?}");
    // The same function invoked whole.
    let whole = f
        .invoke(call(&task, "lines", b"/nowhere"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&whole.output[..], b"firstsecondend");
    // 3.6 MB of pieces that nobody reads: the worker is free again at once.
    let unread = f
        .invoke_stream(call(&task, "pieces", b"60,60000"))
        .await
        .unwrap()
        .into_inner();
    let mut hurried = call(&task, "count", b"");
    hurried.timeout_ms = 10_000;
    let r = f.invoke(hurried).await.unwrap().into_inner();
    assert_eq!(&r.output[..], b"1", "the only worker served on");
    drop(unread);
    // Streamed output counts against max_payload_bytes as a whole: seventy pieces of 60,000
    // bytes (each within the limit of 4,000,000) end the stream with an error after 66.
    let mut stream = f
        .invoke_stream(call(&task, "pieces", b"70,60000"))
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    let end = loop {
        match stream.message().await {
            Ok(Some(chunk)) => match chunk.part.unwrap() {
                pb::invoke_chunk::Part::Data(d) => got += d.len(),
                pb::invoke_chunk::Part::Done(r) => panic!("done over the limit: {r:?}"),
            },
            Ok(None) => panic!("a stream that ends without done or error"),
            Err(status) => break status,
        }
    };
    assert_eq!(got, 66 * 60_000);
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert!(end.message().contains("max_payload_bytes"), "{end:?}");
    // Within it, the pieces all come, and the worker serves on.
    let mut stream = f
        .invoke_stream(call(&task, "pieces", b"3,30000"))
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        if let pb::invoke_chunk::Part::Data(d) = chunk.part.unwrap() {
            got += d.len();
        }
    }
    assert_eq!(got, 90_000);
}
