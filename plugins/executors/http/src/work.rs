//! One execution's request through `wasi:http`, moved along by each `inspect` without ever
//! blocking: write what the body stream takes, look whether the answer came, read what its body
//! has so far.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use spear_plugin_api::PluginError;
use spear_plugin_api::executor::{ExecResult, ExitStatus};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use crate::config::{self, Config, Request};

/// Bytes read from a response body per read.
const READ_CHUNK: u64 = 64 * 1024;

/// Where one execution is.
enum Stage {
    /// The request is sent; its body is being written (`rest`, from `written`).
    Sending {
        response: FutureIncomingResponse,
        // Dropped before `body`: a stream goes before the body it belongs to.
        stream: Option<OutputStream>,
        body: Option<OutgoingBody>,
        rest: Vec<u8>,
        written: usize,
    },
    /// The answer came; its body is being read.
    Reading {
        status: u16,
        exit_header: Option<Vec<u8>>,
        stream: InputStream,
        _body: IncomingBody,
        out: Vec<u8>,
    },
    /// Over.
    Done(ExecResult),
}

/// One execution.
pub struct Work {
    stage: Stage,
    started: Instant,
    cap: usize,
    /// Bytes of answer this execution holds, counted in the executor's [`Held`].
    held: usize,
}

/// Bytes of answers all executions of the executor hold, bounded by [`MAX_HELD`]: past it, an
/// answer that grows fails its execution, and the instance (and its other work) lives on.
#[derive(Debug, Default)]
pub struct Held(AtomicUsize);

/// The most answer bytes the executor holds at once (its memory limit must leave room for twice
/// this: an answer is copied once when it is handed to the host).
pub const MAX_HELD: usize = 16 * 1024 * 1024;

fn failed(why: String, started: Instant) -> ExecResult {
    ExecResult {
        status: ExitStatus::Failed(why),
        stdout: Vec::new(),
        stderr: Vec::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        duration_ms: elapsed_ms(started),
    }
}

/// Why a request failed, in words: a refusal by the host names the grant it lacks.
fn http_failure(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => "http: the host refused the request: this plugin is not \
             granted the endpoint's host (http_hosts in its [plugins.grants] entry)"
            .into(),
        ErrorCode::ConnectionRefused => "http: connection refused".into(),
        ErrorCode::ConnectionTimeout => "http: connection timed out".into(),
        ErrorCode::DnsError(_) => "http: the endpoint's host name does not resolve".into(),
        ErrorCode::InternalError(Some(why)) => format!("http: {why}"),
        other => format!("http: {other:?}"),
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Work {
    /// Send `request` as `config` says; the answer is awaited by [`Work::advance`].
    pub fn send(config: &Config, request: Request, cap: usize) -> Result<Self, PluginError> {
        let started = Instant::now();
        let fields: Vec<(String, Vec<u8>)> = request.headers;
        let headers = Fields::from_list(&fields)
            .map_err(|e| PluginError(format!("a request header is refused: {e:?}")))?;
        let outgoing = OutgoingRequest::new(headers);
        let set = |ok: Result<(), ()>, what: &str| {
            ok.map_err(|()| PluginError(format!("the request's {what} is refused")))
        };
        set(outgoing.set_method(&Method::Post), "method")?;
        let scheme = if config.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        set(outgoing.set_scheme(Some(&scheme)), "scheme")?;
        set(outgoing.set_authority(Some(&config.authority)), "authority")?;
        set(outgoing.set_path_with_query(Some(&request.path)), "path")?;
        let body = outgoing
            .body()
            .map_err(|()| PluginError("the request has no body".into()))?;
        let stream = body
            .write()
            .map_err(|()| PluginError("the request body cannot be written".into()))?;
        let options = RequestOptions::new();
        let _ = options.set_connect_timeout(Some(config.connect_timeout_ms * 1_000_000));
        let stage = match outgoing_handler::handle(outgoing, Some(options)) {
            Ok(response) => Stage::Sending {
                response,
                stream: Some(stream),
                body: Some(body),
                rest: request.body,
                written: 0,
            },
            Err(code) => {
                drop(stream);
                drop(body);
                Stage::Done(failed(http_failure(&code), started))
            }
        };
        let mut work = Self {
            stage,
            started,
            cap,
            held: 0,
        };
        // The body now, as far as the stream takes it: the request must not wait for the first
        // `inspect` to go out.
        if let Stage::Sending {
            stream,
            body,
            rest,
            written,
            ..
        } = &mut work.stage
            && let Err(why) = write_some(stream, body, rest, written)
        {
            work.stage = Stage::Done(failed(why, started));
        }
        Ok(work)
    }

    /// Move along as far as can be without waiting; the result once over.
    pub fn advance(&mut self, held: &Held) -> Option<ExecResult> {
        loop {
            let next = match &mut self.stage {
                Stage::Done(result) => return Some(result.clone()),
                Stage::Sending {
                    response,
                    stream,
                    body,
                    rest,
                    written,
                } => {
                    if let Err(why) = write_some(stream, body, rest, written) {
                        Stage::Done(failed(why, self.started))
                    } else {
                        // The answer is taken by the host only when its pollable is asked.
                        let pollable = response.subscribe();
                        let ready = pollable.ready();
                        drop(pollable);
                        if !ready {
                            return None;
                        }
                        match response.get() {
                            None => return None,
                            Some(Err(())) => Stage::Done(failed(
                                "http: the answer was taken twice".into(),
                                self.started,
                            )),
                            Some(Ok(Err(code))) => {
                                Stage::Done(failed(http_failure(&code), self.started))
                            }
                            Some(Ok(Ok(answer))) => {
                                let status = answer.status();
                                let exit_header = answer
                                    .headers()
                                    .get(config::EXIT_CODE_HEADER)
                                    .into_iter()
                                    .next();
                                match answer.consume().ok().and_then(|body| {
                                    let stream = body.stream().ok()?;
                                    Some((body, stream))
                                }) {
                                    Some((body, stream)) => Stage::Reading {
                                        status,
                                        exit_header,
                                        stream,
                                        _body: body,
                                        out: Vec::new(),
                                    },
                                    None => Stage::Done(failed(
                                        "http: the answer's body cannot be read".into(),
                                        self.started,
                                    )),
                                }
                            }
                        }
                    }
                }
                Stage::Reading {
                    status,
                    exit_header,
                    stream,
                    out,
                    ..
                } => {
                    let mut over = false;
                    let mut truncated = false;
                    let mut failure = None;
                    loop {
                        match stream.read(READ_CHUNK) {
                            Ok(bytes) if bytes.is_empty() => break,
                            Ok(bytes) => {
                                let room = self.cap.saturating_sub(out.len());
                                let take = bytes.len().min(room);
                                let total = held.0.fetch_add(take, Ordering::Relaxed) + take;
                                self.held += take;
                                if total > MAX_HELD {
                                    failure = Some(format!(
                                        "http: the executor holds {} MiB of answers not yet \
                                         collected (at most {} MiB); this one is dropped",
                                        total >> 20,
                                        MAX_HELD >> 20
                                    ));
                                    break;
                                }
                                out.extend_from_slice(&bytes[..take]);
                                if bytes.len() > room {
                                    // Over the cap: the rest is not read.
                                    (over, truncated) = (true, true);
                                    break;
                                }
                            }
                            Err(StreamError::Closed) => {
                                over = true;
                                break;
                            }
                            Err(StreamError::LastOperationFailed(e)) => {
                                failure = Some(format!(
                                    "http: reading the answer failed: {}",
                                    e.to_debug_string()
                                ));
                                break;
                            }
                        }
                    }
                    if let Some(why) = failure {
                        *out = Vec::new();
                        held.0.fetch_sub(self.held, Ordering::Relaxed);
                        self.held = 0;
                        Stage::Done(failed(why, self.started))
                    } else if over {
                        Stage::Done(config::result(
                            *status,
                            exit_header.as_deref(),
                            std::mem::take(out),
                            truncated,
                            self.cap,
                            elapsed_ms(self.started),
                        ))
                    } else {
                        return None;
                    }
                }
            };
            self.stage = next;
        }
    }

    /// Give back the bytes this execution holds (it is being destroyed).
    pub fn release(&mut self, held: &Held) {
        held.0.fetch_sub(self.held, Ordering::Relaxed);
        self.held = 0;
    }

    /// Stop the work: the request is dropped (the host aborts it).
    pub fn stop(&mut self) {
        if !matches!(self.stage, Stage::Done(_)) {
            self.stage = Stage::Done(ExecResult {
                status: ExitStatus::Signaled(15),
                stdout: Vec::new(),
                stderr: b"stopped".to_vec(),
                stdout_truncated: false,
                stderr_truncated: false,
                duration_ms: elapsed_ms(self.started),
            });
        }
    }
}

/// Write as much of the request body as the stream takes now; finish the body once all of it is
/// written.
fn write_some(
    stream: &mut Option<OutputStream>,
    body: &mut Option<OutgoingBody>,
    rest: &mut Vec<u8>,
    written: &mut usize,
) -> Result<(), String> {
    let Some(s) = stream.as_ref() else {
        return Ok(());
    };
    while *written < rest.len() {
        let permit = s
            .check_write()
            .map_err(|e| format!("http: writing the request failed: {e:?}"))?;
        if permit == 0 {
            return Ok(());
        }
        let n = usize::try_from(permit)
            .unwrap_or(usize::MAX)
            .min(rest.len() - *written);
        s.write(&rest[*written..*written + n])
            .map_err(|e| format!("http: writing the request failed: {e:?}"))?;
        *written += n;
    }
    // All written: the stream goes, then the body is finished.
    *stream = None;
    rest.clear();
    if let Some(b) = body.take() {
        OutgoingBody::finish(b, None).map_err(|e| format!("http: {e:?}"))?;
    }
    Ok(())
}
