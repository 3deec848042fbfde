# Helpers for the host side of a workload (workloads/NAME.host.sh), sourced by
# run-guest.sh before it runs `prepare` or `verify`.
# shellcheck shell=bash

host_failures=()

# check NAME COMMAND...: runs COMMAND; prints a PASS/FAIL line naming NAME and
# records the failure (the reason is whatever COMMAND printed on stderr).
check() {
  local name=$1
  shift
  if "$@"; then
    echo "host-check PASS $name"
  else
    echo "host-check FAIL $name"
    host_failures+=("$name")
  fi
}

# Exits non-zero naming every failed check.
checks_done() {
  if [ ${#host_failures[@]} -gt 0 ]; then
    echo "host checks failed: ${host_failures[*]}" >&2
    return 1
  fi
}

# guest_value LOG KEY: the last value the guest published with `value KEY ...`.
guest_value() {
  sed -n "s/^.*DAXFSD-VALUE $2 \([^[:space:]]*\).*$/\1/p" "$1" | tail -n 1
}

md5_of() { md5sum "$1" | cut -d' ' -f1; }

# metric FILE NAME: the value of daxfsd_NAME in a --metrics-file snapshot
# (nothing if the file or the line is not there yet).
metric() {
  sed -n "s/^daxfsd_$2 \([0-9]*\)$/\1/p" "$1" 2>/dev/null
}

# report_metrics LABEL FILE NAME...: one stderr line "LABEL metrics: NAME=value
# ..." with the counters of a --metrics-file snapshot (names without their
# dax_ prefix and _total suffix).
report_metrics() {
  local label=$1 file=$2 name line
  shift 2
  line="$label metrics:"
  for name in "$@"; do
    line+=" ${name#dax_}"
    line="${line%_total}=$(metric "$file" "$name")"
  done
  echo "$line" >&2
}

# eq WHAT ACTUAL EXPECTED
eq() {
  [ "$2" = "$3" ] && return 0
  echo "  $1: got '$2', expected '$3'" >&2
  return 1
}

absent() {
  local p
  for p in "$@"; do
    if [ -e "$p" ] || [ -L "$p" ]; then echo "  $p still exists" >&2; return 1; fi
  done
}
