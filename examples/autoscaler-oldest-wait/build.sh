#!/usr/bin/env bash
# Build `oldest-wait` into OUT_DIR (default: target/examples at the top of the repository) as
# oldest-wait.wasm, a WASM component of the autoscaling-policy world.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$repo/target/examples}" && cd "${1:-$repo/target/examples}" && pwd)
rustup target add wasm32-wasip2 >/dev/null
export CARGO_TARGET_DIR="$repo/target/examples-cargo"
cargo build --release -j2 --manifest-path "$here/../Cargo.toml" -p oldest-wait --target wasm32-wasip2
cp -f "$CARGO_TARGET_DIR/wasm32-wasip2/release/oldest_wait.wasm" "$out/oldest-wait.wasm"
echo "$out/oldest-wait.wasm"
