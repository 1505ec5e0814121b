//! Helpers for tests that run the real `sms`, `spearlet` and `spear` binaries as processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Child;

/// A free loopback address (bound, then released).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The first line `child` prints on its piped stdout (its ready line); panics, with the exit
/// status, when it exits before printing one.
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        !line.is_empty(),
        "the process exited before it started: {:?}",
        child.wait()
    );
    line
}

/// The address in `NAME=host:port` of a ready line.
pub fn field(line: &str, name: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        .parse()
        .unwrap()
}
