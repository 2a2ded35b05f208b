#!/usr/bin/env bash
# docs/op-table.md must be what scripts/op-table.sh generates now.
set -euo pipefail
SRC="$1"; BUILD="$2"
tmp="$(mktemp)"
trap 'rm -f "$tmp" "$tmp.tmp"' EXIT
(cd "$SRC" && bash scripts/op-table.sh "$BUILD" "$tmp" >/dev/null)
if ! diff -u "$SRC/docs/op-table.md" "$tmp"; then
  echo "docs/op-table.md is stale: run scripts/op-table.sh"
  exit 1
fi
echo "docs/op-table.md matches the compiler"
