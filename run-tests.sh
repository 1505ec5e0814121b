#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine that has only the Rust toolchain.
# Installs what it needs first (idempotent): the wasm32-wasip2 and wasm32-unknown-unknown targets
# (guest plugins are built by tests/build.rs with them), rustfmt and clippy; protoc and etcd
# (tests/etcd/setup.sh); the examples' tool chains (examples/*/build.sh), Podman (tests/podman/setup.sh), chromium and playwright-core
# (tests/browser/setup.sh), moto (tests/s3/setup.sh) and schemathesis (tests/schemathesis/run.sh).
set -euo pipefail
cd "$(dirname "$0")"
# A fresh machine builds everything once, so incremental compilation would only add its caches
# (several GB) to target/: a CI run once ran out of disk. CARGO_INCREMENTAL=1 keeps them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== toolchain"
rustup target add wasm32-wasip2 wasm32-wasip1 wasm32-unknown-unknown
rustup component add rustfmt clippy

echo "== format"
cargo fmt --all -- --check
cargo fmt --manifest-path examples/Cargo.toml --all -- --check

echo "== etcd and protoc (Debian; the etcd storage backend builds with protoc, its tests start etcd)"
bash tests/etcd/setup.sh

echo "== examples (each with its own tool chain: Debian, PyPI, npm, crates.io)"
bash examples/build.sh target/examples

echo "== lints and test builds"
# Clippy compiles the workspaces' own crates for the rest of the run (RUSTC_WORKSPACE_WRAPPER, as
# `cargo clippy` sets it, but building instead of only checking): the test builds below lint as
# they compile, so every dependency is compiled once instead of checked by `cargo clippy` and then
# built again. Any warning fails the build, as `cargo clippy --all-targets -- -D warnings` would.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# The lints must be on: a crate with a lint error must not build this way.
canary=$(mktemp -d)
cargo init -q --vcs none --name lint-canary "$canary"
printf 'fn main() {\n    let v = vec![1];\n    println!("{}", v.len());\n}\n' >"$canary/src/main.rs"
if cargo build -q --manifest-path "$canary/Cargo.toml" --target-dir "$canary/target" 2>/dev/null; then
  echo "run-tests.sh: clippy does not lint through RUSTC_WORKSPACE_WRAPPER and CLIPPY_ARGS" >&2
  exit 1
fi
rm -rf "$canary"
cargo test --workspace --all-targets --no-run -j2
# Crates no other depends on (examples, fixtures) are built above only as tests: their libraries too.
cargo build --workspace --lib --bins -j2
CARGO_TARGET_DIR=target/examples-cargo cargo test --manifest-path examples/Cargo.toml --workspace --all-targets --no-run -j2
CARGO_TARGET_DIR=target/examples-cargo cargo build --manifest-path examples/Cargo.toml --workspace --lib --bins -j2

echo "== tests"
bash tests/podman/setup.sh # a private Podman for the container executor (root; apt)
bash tests/browser/setup.sh # Debian's chromium and playwright-core, for the web admin's browser test
bash tests/s3/setup.sh # moto's S3-compatible server (PyPI), for s3:// and minio:// artifacts
log=$(mktemp)
trap 'rm -f "$log"' EXIT
CARGO_TARGET_DIR=target/examples-cargo cargo test --manifest-path examples/Cargo.toml --workspace -j2 2>&1 | tee "$log"
# host/spearlet/tests/all/examples.rs loads target/examples/* into `spear plugin check` and live hosts.
cargo test --workspace -j2 2>&1 | tee -a "$log"
echo "== REST contract (schemathesis against a live SMS, bounded)"
bash tests/schemathesis/run.sh 120
# One closing line over every test binary (the last one cargo prints is often a doc-test with 0).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
