#!/usr/bin/env bash
# Sets up the S3 tests, idempotently: moto's S3-compatible server (PyPI, pinned) in a venv at
# target/example-tools/moto-venv, skipped while that venv holds the pinned version. Run by
# run-tests.sh before the tests; host/spearlet/tests/all/object_artifacts.rs starts the server.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
VERSION=5.2.5
venv="$repo/target/example-tools/moto-venv"
installed() {
    [ -x "$venv/bin/moto_server" ] &&
        [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" \
            = "$VERSION" ]
}
if ! installed; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$VERSION"
fi
