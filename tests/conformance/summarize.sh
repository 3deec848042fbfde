#!/usr/bin/env bash
# Turns pjdfstest's output into "test<TAB>status" lines (status: ok, failed,
# skipped), sorted by test name, so that runs can be compared with join(1).
#   summarize.sh RESULTS.TXT
set -euo pipefail
[ $# = 1 ] || { echo "usage: summarize.sh RESULTS.TXT" >&2; exit 2; }
awk '
  /^[a-z0-9_]+(::[A-Za-z0-9_]+)+[ \t]/ {
    status = tolower($NF)
    if (status == "ok" || status == "skipped") print $1 "\t" status
    else print $1 "\tfailed"
  }' "$1" | LC_ALL=C sort
