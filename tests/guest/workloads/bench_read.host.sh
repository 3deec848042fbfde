#!/usr/bin/env bash
# Workload "bench_read", host side: a 64 MiB file of random bytes.
set -euo pipefail
case ${1:-} in
  prepare) head -c 67108864 /dev/urandom >"$2/bench.bin" ;;
  verify) grep -q "DAXFSD-VALUE bench.warm.ns" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
