#!/usr/bin/env bash
# Build every example plugin into OUT_DIR (default: target/examples), each with its real tool chain,
# which each folder's build.sh installs first when missing (Debian packages, PyPI, npm, crates.io;
# idempotent). ./run-tests.sh runs this before the tests that load the examples.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/../target/examples}" && cd "${1:-$here/../target/examples}" && pwd)
for dir in rust-component rust-extism native-strategy reclaimer-max-age autoscaler-oldest-wait python storage-python javascript c assemblyscript; do
  echo "== examples/$dir"
  start=$SECONDS
  bash "$here/$dir/build.sh" "$out"
  echo "   ($((SECONDS - start)) s)"
done
