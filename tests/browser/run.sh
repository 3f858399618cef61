#!/usr/bin/env bash
# run.sh TEST.js - runs one browser test of tests/browser/ (driver.js):
# installs playwright-core from the lock file when node_modules is missing
# or older than it (npm ci, no browser download), then runs the test with
# node. Exit status 77 (ctest's SKIP_RETURN_CODE) with a visible SKIP line
# when chromium or node is not installed. ctest passes LATCH_EXAMPLES_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
test=${1:?usage: run.sh TEST.js}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node/npm are not installed (scripts/deps.sh test installs them)"
  exit 77
fi
if [ -z "${LATCH_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "SKIP: chromium is not installed (scripts/deps.sh test installs it)"
  exit 77
fi
# One install at a time: the plain and sanitized builds share the folder.
(
  flock 9
  if [ ! -d "$here/node_modules/playwright-core" ] ||
    [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  fi
) 9>"$here/.npm-install.lock"
exec node "$here/$test"
