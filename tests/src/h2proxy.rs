//! A TCP proxy on 127.0.0.1 in front of an HTTP/2 (gRPC) server that can hold a request back
//! and deliver it later: what a slow network or a follower forwarding to its leader does to a
//! request its client has given up on. While it holds, the client's bytes are kept (in order)
//! instead of forwarded, and the client's stream resets (HTTP/2 `RST_STREAM`, sent when a request
//! times out) are dropped, so that the server, once released, takes the request whole. It can also
//! go down: every connection closed, new ones closed at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The client connection preface that starts every HTTP/2 connection.
const PREFACE: usize = 24;
/// HTTP/2's `RST_STREAM` frame type.
const RST_STREAM: u8 = 3;

#[derive(Default)]
struct Shared {
    holding: AtomicBool,
    down: AtomicBool,
    /// Frames held since the last `hold`.
    held: AtomicUsize,
    /// Stream resets dropped while holding.
    resets: AtomicUsize,
    /// Connections, to close when going down.
    conns: Mutex<Vec<TcpStream>>,
}

/// A running proxy (its threads end with the process).
pub struct H2Proxy {
    addr: String,
    shared: Arc<Shared>,
}

impl H2Proxy {
    /// Proxy to `upstream` (`host:port` or `http://host:port`).
    pub fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if s.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let s = s.clone();
                std::thread::spawn(move || serve(client, server, s));
            }
        });
        Self { addr, shared }
    }

    /// `http://` and the proxy's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Keep the client's bytes from now on.
    pub fn hold(&self) {
        self.shared.held.store(0, Ordering::SeqCst);
        self.shared.holding.store(true, Ordering::SeqCst);
    }

    /// Frames held since [`hold`](Self::hold).
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Stream resets dropped while holding.
    pub fn resets_dropped(&self) -> usize {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Deliver what was held, and forward again (within ~50 ms).
    pub fn release(&self) {
        self.shared.holding.store(false, Ordering::SeqCst);
    }

    /// Close every connection and refuse new ones (`false`: accept them again).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            for c in self.shared.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Forward one connection: the server's bytes as they come, the client's frame by frame.
fn serve(mut client: TcpStream, mut server: TcpStream, shared: Arc<Shared>) {
    {
        let mut conns = shared.conns.lock().unwrap();
        conns.extend(client.try_clone().ok());
        conns.extend(server.try_clone().ok());
    }
    let (mut from_server, mut to_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    client
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (mut buf, mut held) = (Vec::<u8>::new(), Vec::<u8>::new());
    let mut preface = true;
    let mut chunk = [0u8; 64 * 1024];
    let mut open = true;
    while open || !held.is_empty() {
        if open {
            match client.read(&mut chunk) {
                Ok(0) => open = false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => open = false,
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
        let holding = shared.holding.load(Ordering::SeqCst);
        // Whole units: the preface, then frames (a 9-byte header with a 24-bit length).
        loop {
            let len = if preface {
                PREFACE
            } else if buf.len() >= 9 {
                9 + (usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]))
            } else {
                break;
            };
            if buf.len() < len {
                break;
            }
            let unit: Vec<u8> = buf.drain(..len).collect();
            let reset = !preface && unit[3] == RST_STREAM;
            preface = false;
            if holding {
                if reset {
                    shared.resets.fetch_add(1, Ordering::SeqCst);
                } else {
                    shared.held.fetch_add(1, Ordering::SeqCst);
                    held.extend_from_slice(&unit);
                }
            } else {
                held.extend_from_slice(&unit);
            }
        }
        if !holding && !held.is_empty() {
            if server.write_all(&held).is_err() {
                return;
            }
            held.clear();
        }
        if shared.down.load(Ordering::SeqCst) && !holding {
            return;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
}
