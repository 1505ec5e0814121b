#!/usr/bin/env bash
# Build `pack-native` into OUT_DIR (default: target/examples at the top of the repository) as pack-native.so.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$repo/target/examples}" && cd "${1:-$repo/target/examples}" && pwd)
export CARGO_TARGET_DIR="$repo/target/examples-cargo"
cargo build --release -j2 --manifest-path "$here/../Cargo.toml" -p pack-native
cp -f "$CARGO_TARGET_DIR/release/libpack_native.so" "$out/pack-native.so"
echo "$out/pack-native.so"
