#!/usr/bin/env bash
# The guest side of issue 15's inode-scale benchmark: a real Linux guest
# (QEMU TCG, tests/guest/run-guest.sh) lists and stats FILES files of one
# directory twice (workload many_files: `ls -ln`, then again once the
# guest's 1 s cache expired) while the daemon runs at --rlimit-nofile 4096;
# daxfsd, then virtiofsd 1.14, both with their default
# --inode-file-handles=prefer and --sandbox none (so the process sampled
# is the one serving). Samples each daemon's descriptors every 0.5 s and
# prints a table: the two listing rounds' times, the most descriptors held,
# and the peak RSS.
#
#   benches/guest-many-files.sh [--files N] [--daxfsd PATH] [--virtiofsd PATH]
#
# Needs root (as the guest tests); builds nothing but what tests/guest/
# builds (the initramfs), installs virtiofsd when missing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
files=100000
daxfsd=$repo/target/release/daxfsd
virtiofsd=
while [ $# -gt 0 ]; do
  case $1 in
    --files) files=$2; shift 2 ;;
    --daxfsd) daxfsd=$2; shift 2 ;;
    --virtiofsd) virtiofsd=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "guest-many-files: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$daxfsd" ] || { echo "guest-many-files: no daxfsd at $daxfsd (cargo build --release -p daxfsd)" >&2; exit 2; }
virtiofsd=${virtiofsd:-$("$repo/tests/tools/install-virtiofsd.sh")}
work=$(mktemp -d /tmp/daxfsd-guest-many.XXXXXX)
trap 'rm -rf "$work"' EXIT

# run NAME BINARY: one guest run; leaves NAME.log (run-guest's output) and
# NAME.samples ("fds vmhwm_kib" per line) in $work.
run() {
  local name=$1 bin=$2
  # A wrapper that records the daemon's pid, then becomes the daemon.
  printf '#!/bin/sh\necho $$ >%s/%s.pid\nexec %s "$@"\n' "$work" "$name" "$bin" >"$work/$name.sh"
  chmod +x "$work/$name.sh"
  rm -f "$work/$name.pid"
  DAXFSD_MANY_FILES=$files DAXFSD_GUEST_TIMEOUT=3000 "$repo/tests/guest/run-guest.sh" \
    --workload many_files --daemon-bin "$work/$name.sh" --work-dir "$work/$name.run" --keep \
    --daemon-args "--sandbox none" >"$work/$name.log" 2>&1 &
  local guest=$! pid=
  : >"$work/$name.samples"
  while kill -0 "$guest" 2>/dev/null; do
    [ -n "$pid" ] || pid=$(cat "$work/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
      local fds hwm
      fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
      [ -z "$hwm" ] || echo "$fds $hwm" >>"$work/$name.samples"
    fi
    sleep 0.5
  done
  wait "$guest" || { echo "guest-many-files: the $name run failed:" >&2; tail -n 30 "$work/$name.log" >&2; exit 1; }
}

# step NAME ROUND: the seconds the guest's listing of round ROUND took.
step() { sed -n "s/^DAXFSD-VALUE many.seconds$2 \([0-9.]*\).*/\1/p" "$work/$1.run/guest.log" | head -n 1; }
most() { awk -v c="$2" 'BEGIN { m = 0 } $c > m { m = $c } END { print m }' "$work/$1.samples"; }

echo "guest-many-files: $files files, QEMU TCG guest, --rlimit-nofile 4096, load average $(cut -d' ' -f1-3 /proc/loadavg)"
run daxfsd "$daxfsd"
run virtiofsd "$virtiofsd"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '\n| %s files, listed twice | daxfsd | virtiofsd | speed d/v |\n| --- | ---: | ---: | ---: |\n' "$files"
for s in 1 2; do
  d=$(step daxfsd "$s") v=$(step virtiofsd "$s")
  printf '| ls -ln, round %s (s) | %s | %s | %s |\n' "$s" "$d" "$v" "$(awk -v d="$d" -v v="$v" 'BEGIN { if (d > 0) printf "%.2f×", v / d }')"
done
printf '| most descriptors held | %s | %s | |\n' "$(most daxfsd 1)" "$(most virtiofsd 1)"
dh=$(most daxfsd 2) vh=$(most virtiofsd 2)
printf '| peak RSS (VmHWM) | %s KiB | %s KiB | %s |\n' "$dh" "$vh" "$(awk -v d="$dh" -v v="$vh" 'BEGIN { if (v > 0) printf "%.2f×", d / v }')"
