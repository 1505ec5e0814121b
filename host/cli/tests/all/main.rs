//! The `spear` binary against a real `sms` and a real `spearlet` on 127.0.0.1: every command, its
//! JSON output, its exit codes and its errors; `spear dev` (`dev`) and `spear plugin` (`plugin`).
//! One test binary for the crate: each `tests/*.rs` would be its own 130 MB link.

mod common;
mod dev;
mod executions;
mod plugin;
mod replay;
mod replicas;
mod resources;
mod tls;
mod tokens;

const SH: [&str; 7] = [
    "run",
    "--type",
    "process",
    "--name",
    "/bin/sh",
    "--max-attempts",
    "1",
];

/// `spear run --type process --name /bin/sh --max-attempts 1 [extra…] -- -c script`.
fn sh_args<'a>(extra: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut args = SH.to_vec();
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "-c", script]);
    args
}
