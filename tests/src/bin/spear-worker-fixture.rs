//! A worker for the tests of the worker protocol (docs/workers.md): says hello, then serves
//! `count` (a counter kept in the process), `echo`, `fail` (a function error), `exit` (dies
//! mid-invocation), `garbage` (answers a frame the protocol does not allow), `hang` (never
//! answers) and `wrong-id` (answers another request's id).
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
