#!/usr/bin/env bash
# Sets up the browser tests, idempotently: Debian's chromium (apt) and playwright-core from the npm
# registry (a driver only: it downloads no browser). Run by run-tests.sh before the tests.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -f node_modules/playwright-core/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
