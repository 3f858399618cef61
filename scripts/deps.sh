#!/usr/bin/env bash
# Installs the Debian packages latch needs, only those that are missing.
# Usage: scripts/deps.sh [build|test|fuzz|bench]... (default: build)
set -euo pipefail

want=(gcc make cmake pkg-config libuv1-dev libjansson-dev)
for what in "${@:-build}"; do
  case "$what" in
    build) ;;
    test) want+=(libcmocka-dev libcurl4-openssl-dev curl clang-format) ;;
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

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
    missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q "${missing[@]}"; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
fi
