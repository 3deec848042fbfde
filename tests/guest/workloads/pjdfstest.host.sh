#!/usr/bin/env bash
# Workload "pjdfstest", host side: nothing to prepare; afterwards the guest's
# verdicts are written to $DAXFSD_PJDFSTEST_OUT/results.tsv (when set) and
# compared with the known failures in $DAXFSD_PJDFSTEST_KNOWN (when set).
set -euo pipefail
case ${1:-} in
  prepare) ;;
  verify)
    log=$4
    tsv=$(sed -n 's/^.*DAXFSD-PJDFSTEST \([^ ]*\) \([a-z]*\).*$/\1\t\2/p' "$log" |
      awk -F'\t' '{ s = ($2 == "ok" || $2 == "skipped") ? $2 : "failed"; print $1 "\t" s }' |
      LC_ALL=C sort)
    [ -n "$tsv" ] || { echo "pjdfstest: no verdicts in $log" >&2; exit 1; }
    if [ -n "${DAXFSD_PJDFSTEST_OUT:-}" ]; then
      mkdir -p "$DAXFSD_PJDFSTEST_OUT"
      printf '%s\n' "$tsv" >"$DAXFSD_PJDFSTEST_OUT/results.tsv"
      grep -a '^pjdfstest-failure:' "$log" >"$DAXFSD_PJDFSTEST_OUT/failures.txt" || true
    fi
    printf '%s\n' "$tsv" | awk -F'\t' '{ n[$2]++ } END {
      printf "pjdfstest: %d passed, %d failed, %d skipped\n", n["ok"], n["failed"], n["skipped"] }'
    unexpected=$(printf '%s\n' "$tsv" | awk -F'\t' '$2 == "failed" { print $1 }' |
      { if [ -n "${DAXFSD_PJDFSTEST_KNOWN:-}" ]; then
          grep -vxF -f <(grep -v '^#' "$DAXFSD_PJDFSTEST_KNOWN") || true
        else cat; fi; })
    if [ -n "$unexpected" ]; then
      echo "pjdfstest: unexpected failures:" >&2
      printf '%s\n' "$unexpected" | sed 's/^/  /' >&2
      exit 1
    fi
    ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
