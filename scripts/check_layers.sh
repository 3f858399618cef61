#!/usr/bin/env bash
# scripts/check_layers.sh OBJDIR [LAYERS]: fails, naming each symbol, when
# a module of src/ refers to a function or datum of a module that the
# LAYERS file (default src/LAYERS) does not let it name. OBJDIR holds the
# objects of src/*.c as CMake builds them (NAME.c.o). `make test` runs it
# on build/. An event that must go up goes through a table the upper
# module installs (DESIGN.md, "Layers"), never by name.
set -euo pipefail
objs=$1
layers=${2:-$(dirname "$0")/../src/LAYERS}
[ -d "$objs" ] || { echo "check_layers: no directory $objs" >&2; exit 2; }
[ -f "$layers" ] || { echo "check_layers: no file $layers" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The allowed pairs "caller callee" (a line with a module alone: it names
# no other module), comments and blank lines dropped.
sed -e 's/#.*//' -e 's/[[:space:]]\+/ /g' -e 's/^ //' -e 's/ $//' "$layers" |
  awk '{ for (i = 2; i <= NF; i++) print $1, $i }' | sort -u >"$tmp/allowed"

# Which module defines each global symbol.
for o in "$objs"/*.c.o; do
  m=$(basename "$o" .c.o)
  nm --defined-only "$o" | awk -v m="$m" '$2 ~ /^[TDBRC]$/ { print $3, m }'
done | sort -u >"$tmp/defs"

status=0
for o in "$objs"/*.c.o; do
  m=$(basename "$o" .c.o)
  nm --undefined-only "$o" | awk '{ print $2 }' | sort -u |
    join - "$tmp/defs" >"$tmp/uses" || true
  while read -r sym callee; do
    [ "$callee" = "$m" ] && continue
    if ! grep -qx "$m $callee" "$tmp/allowed"; then
      echo "layering: $m.c names $callee.c ($sym); src/LAYERS does not allow it" >&2
      status=1
    fi
  done <"$tmp/uses"
done
# The graph of the edges really used must have no cycle, whatever
# src/LAYERS allows: tsort names the modules of each loop it meets.
for o in "$objs"/*.c.o; do
  m=$(basename "$o" .c.o)
  nm --undefined-only "$o" | awk '{ print $2 }' | sort -u |
    join - "$tmp/defs" | awk -v m="$m" '$2 != m { print m, $2 }'
done | sort -u >"$tmp/edges"
if ! tsort "$tmp/edges" >/dev/null 2>"$tmp/loops"; then
  echo "layering: the modules form a cycle:" \
    "$(grep -v 'input contains a loop' "$tmp/loops" | sed 's/^tsort: //' |
      tr '\n' ' ')" >&2
  status=1
fi
exit $status
