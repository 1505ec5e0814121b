//! A worker for the tests of the worker protocol (docs/workers.md): says hello, then serves
//! `count` (a counter kept in the process), `echo`, `fail` (a function error), `exit` (dies
//! mid-invocation), `garbage` (answers a frame the protocol does not allow), `hang` (never
//! answers), `wrong-id` (answers another request's id), `gate` (asked for pieces of output: sends
//! the piece `first`, waits up to ten seconds for the file its payload names to exist, sends
//! `second`, and answers `end`, or `no gate` if the file never came; asked for none: answers `firstsecondend`) and `unasked` (sends a
//! piece of output whether asked or not).
//!
//! `SPEAR_WORKER_HELLO=old` makes it announce protocol 0.

use std::io::{Read, Write};

fn read_frame(input: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).ok()?;
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut frame).ok()?;
    Some(frame)
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) {
    out.write_all(&(bytes.len() as u32).to_be_bytes()).unwrap();
    out.write_all(bytes).unwrap();
}

fn answer(out: &mut impl Write, header: &str, payload: &[u8]) {
    write_frame(out, header.as_bytes());
    write_frame(out, payload);
    out.flush().unwrap();
}

fn main() {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let protocol = if std::env::var("SPEAR_WORKER_HELLO").as_deref() == Ok("old") {
        0
    } else {
        1
    };
    answer(
        &mut out,
        &format!(r#"{{"ready":true,"protocol":{protocol}}}"#),
        b"",
    );
    let mut count = 0u64;
    while let Some(header) = read_frame(&mut input) {
        let Some(payload) = read_frame(&mut input) else {
            return;
        };
        let header = String::from_utf8(header).unwrap();
        let id: u64 = header
            .split("\"id\":")
            .nth(1)
            .and_then(|s| s.split([',', '}']).next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap();
        let function = header
            .split("\"function\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let ok = format!(r#"{{"id":{id},"ok":true}}"#);
        let stream = header.contains(r#""stream":true"#);
        let piece = format!(r#"{{"id":{id},"chunk":true}}"#);
        match function.as_str() {
            "count" => {
                count += 1;
                answer(&mut out, &ok, count.to_string().as_bytes());
            }
            "echo" => answer(&mut out, &ok, &payload),
            "fail" => answer(
                &mut out,
                &format!(
                    r#"{{"id":{id},"ok":false,"error":"failed on {} bytes"}}"#,
                    payload.len()
                ),
                b"",
            ),
            "exit" => std::process::exit(3),
            "gate" if stream => {
                answer(&mut out, &piece, b"first");
                let gate = std::path::PathBuf::from(String::from_utf8(payload).unwrap());
                let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !gate.exists() && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                answer(&mut out, &piece, b"second");
                let end: &[u8] = if gate.exists() { b"end" } else { b"no gate" };
                answer(&mut out, &ok, end);
            }
            "gate" => answer(&mut out, &ok, b"firstsecondend"),
            "unasked" => {
                answer(&mut out, &piece, b"x");
                answer(&mut out, &ok, b"");
            }
            "garbage" => {
                out.write_all(&[0xff, 0xff, 0xff, 0xff, b'x']).unwrap();
                out.flush().unwrap();
            }
            "hang" => loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            },
            "wrong-id" => answer(
                &mut out,
                &format!(r#"{{"id":{},"ok":true}}"#, id + 100),
                b"",
            ),
            other => answer(
                &mut out,
                &format!(r#"{{"id":{id},"ok":false,"error":"no function {other}"}}"#),
                b"",
            ),
        }
    }
}
