#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine that has only the Rust toolchain.
# Installs what it needs first (idempotent): the wasm32-wasip2 and wasm32-unknown-unknown targets
# (guest plugins are built by tests/build.rs with them), rustfmt and clippy.
set -euo pipefail
cd "$(dirname "$0")"

echo "== toolchain"
rustup target add wasm32-wasip2 wasm32-unknown-unknown
rustup component add rustfmt clippy

echo "== format"
cargo fmt --all -- --check

echo "== lints"
cargo clippy --workspace --all-targets -j2 -- -D warnings

echo "== tests"
cargo test --workspace -j2
