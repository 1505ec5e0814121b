#!/usr/bin/env bash
# Build `pack-rust-extism` into OUT_DIR (default: target/examples at the top of the repository) as pack-rust-extism.wasm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$repo/target/examples}" && cd "${1:-$repo/target/examples}" && pwd)
rustup target add wasm32-unknown-unknown >/dev/null
export CARGO_TARGET_DIR="$repo/target/examples-cargo"
cargo build --release -j2 --manifest-path "$here/../Cargo.toml" -p pack-rust-extism --target wasm32-unknown-unknown
cp -f "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/pack_rust_extism.wasm" "$out/pack-rust-extism.wasm"
echo "$out/pack-rust-extism.wasm"
