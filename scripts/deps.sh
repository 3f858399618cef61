#!/usr/bin/env bash
# Installs the Debian packages latch needs, only those that are missing.
# Usage: scripts/deps.sh [build|test|fuzz|bench]... (default: build)
set -euo pipefail

want=(gcc make cmake pkg-config libuv1-dev libjansson-dev libhiredis-dev libssl-dev)
norec=()    # installed without their recommended packages
optional=() # the same, but a failure leaves their tests to SKIP
for what in "${@:-build}"; do
  case "$what" in
    build) ;;
    test)
      want+=(libcmocka-dev libcurl4-openssl-dev curl clang-format redis-server openssl
        groff-base)
      # promtool checks the /metrics text (tests/integration/test_ops.c);
      # only the tool is wanted, not the exporters it recommends.
      norec+=(prometheus)
      # The browser tests (tests/browser/): Debian's chromium, headless,
      # driven from Node by playwright-core (npm, pinned in its lock file).
      optional+=(chromium)
      command -v node >/dev/null || want+=(nodejs)
      command -v npm >/dev/null || want+=(npm)
      ;;
    fuzz) want+=(clang libclang-rt-14-dev) ;;
    bench)
      want+=(wrk nginx-light h2o curl valgrind util-linux procps time)
      # Node may come from elsewhere than Debian (NodeSource bundles npm):
      # ask for Debian's packages only when the commands are missing.
      command -v node >/dev/null || want+=(nodejs)
      command -v npm >/dev/null || want+=(npm)
      ;;
    *) echo "deps.sh: unknown set '$what'" >&2; exit 2 ;;
  esac
done

# The packages of a list that are not installed.
missing_of() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
      echo "$p"
  done
}
mapfile -t missing < <(missing_of "${want[@]}")
mapfile -t missing_norec < <(missing_of "${norec[@]}")
mapfile -t missing_opt < <(missing_of "${optional[@]}")
[ ${#missing[@]} -eq 0 ] && [ ${#missing_norec[@]} -eq 0 ] &&
  [ ${#missing_opt[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# apt_install [apt options] packages...: updates the lists once if needed.
apt_install() {
  if ! $SUDO apt-get install -y -q "$@"; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q "$@"
  fi
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  apt_install "${missing[@]}"
fi
if [ ${#missing_norec[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing_norec[*]}"
  apt_install --no-install-recommends "${missing_norec[@]}"
fi
if [ ${#missing_opt[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing_opt[*]}"
  apt_install --no-install-recommends "${missing_opt[@]}" ||
    echo "deps.sh: could not install ${missing_opt[*]}: the tests that need them SKIP" >&2
fi
