#!/usr/bin/env bash
# scripts/check_format.sh: fails, naming each file, when a tracked C file
# differs from what clang-format makes of it with the project's
# .clang-format (STYLE.md). `clang-format -i FILE` fixes one. Run by
# `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || {
  echo "check_format: clang-format is missing (scripts/deps.sh test)" >&2
  exit 1
}
bad=0
while IFS= read -r f; do
  [ -f "$f" ] || continue
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "format: $f differs from clang-format (clang-format -i $f)" >&2
    bad=1
  fi
done < <(git ls-files '*.c' '*.h')
exit $bad
