//! A small HTTP/1.1 server on 127.0.0.1 for tests of the `http` executor: it records every
//! request it gets and answers by path:
//!
//! - `/upper/...`: 200, the request body upper-cased;
//! - `/echo/...`: 200, the request body as it came;
//! - `/fail/...`: 503, `busy`;
//! - `/code/N/...`: 200 with `x-spear-exit-code: N`, body `coded`;
//! - `/slow/MS/...`: waits MS milliseconds, then 200 `late`;
//! - `/big/N/...`: 200, N bytes of `x`;
//! - `/stall/MS/...`: 200 with `content-length: 5`, the headers at once, the body `stall`
//!   MS milliseconds later;
//! - anything else: 404.
//!
//! One thread per connection; a connection serves one request (`connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the server got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The running server; it stops serving when dropped (its listener thread ends at the next
/// connection or with the process).
pub struct HttpServer {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Start on an ephemeral port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let log = seen.clone();
        let accepted = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(conn) = conn else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &log);
                });
            }
        });
        Self {
            addr,
            seen,
            connections,
        }
    }

    /// Connections accepted so far (a request refused before it was sent makes none).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(conn: TcpStream, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_owned());
            if n == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            if n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            headers.push((n, v));
        }
    }
    let body = if chunked {
        read_chunked(&mut reader)?
    } else {
        let mut b = vec![0; length.min(64 << 20)];
        reader.read_exact(&mut b)?;
        b
    };
    log.lock().unwrap().push(Seen {
        method,
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, extra, answer): (u16, Option<String>, Vec<u8>) = match segments.as_slice() {
        ["upper", ..] => (200, None, body.to_ascii_uppercase()),
        ["echo", ..] => (200, None, body),
        ["fail", ..] => (503, None, b"busy".to_vec()),
        ["code", n, ..] => (
            200,
            Some(format!("x-spear-exit-code: {n}")),
            b"coded".to_vec(),
        ),
        ["slow", ms, ..] => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            (200, None, b"late".to_vec())
        }
        ["big", n, ..] => (200, None, vec![b'x'; n.parse().unwrap_or(0)]),
        ["stall", ms, ..] => {
            let mut out = conn;
            out.write_all(b"HTTP/1.1 200 X\r\ncontent-length: 5\r\nconnection: close\r\n\r\n")?;
            out.flush()?;
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            out.write_all(b"stall")?;
            return out.flush();
        }
        _ => (404, None, b"no such path".to_vec()),
    };
    let mut out = conn;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        answer.len()
    );
    if let Some(h) = extra {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&answer)?;
    out.flush()
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size)?;
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if n == 0 {
            let mut end = String::new();
            reader.read_line(&mut end)?;
            return Ok(body);
        }
        let mut chunk = vec![0; n.min(64 << 20)];
        reader.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk);
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}
