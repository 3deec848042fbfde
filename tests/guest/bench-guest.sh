#!/usr/bin/env bash
# Real-guest read benchmark (not part of the test suite): 4 KiB psync reads
# of a 64 MiB file in a TCG guest, a cold pass and a warm pass, for
#
#   daxfsd-dax      daxfsd, DAX window (patched QEMU, dax=always)
#   alioth-dax      alioth 0.12 `vu fs`, DAX window (legacy protocol)
#   daxfsd-auto     daxfsd, no DAX, --cache auto (guest page cache)
#   virtiofsd-auto  upstream virtiofsd, --cache auto
#   daxfsd-never    daxfsd, no DAX, --cache never
#   virtiofsd-never upstream virtiofsd, --cache never
#
# Each configuration runs RUNS times (default 3; TCG timings vary up to 2x
# run to run) and keeps its best pass times. Prints a table and the ratios
# the performance issue asks about. Absolute numbers mean little under TCG;
# the ratios are measured in one sitting on one machine.
#
#   tests/guest/bench-guest.sh [--runs N] [--configs "daxfsd-dax ..."] [--window SIZE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=3
window=128M
configs="daxfsd-dax alioth-dax daxfsd-auto virtiofsd-auto daxfsd-never virtiofsd-never"
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    *) echo "bench-guest: unknown option $1" >&2; exit 2 ;;
  esac
done

"$here/setup.sh" >/dev/null
qemu=$("$repo/tests/qemu/build-qemu.sh")
(cd "$repo" && cargo build --release --locked -q -p daxfsd)
daxfsd=$repo/target/release/daxfsd
case " $configs " in *" virtiofsd-"*) virtiofsd=$("$repo/tests/tools/install-virtiofsd.sh") ;; esac
case " $configs " in *" alioth-"*) alioth=$("$repo/tests/qemu/install-alioth.sh") ;; esac
initrd=$("$here/build-initramfs.sh")

# run CONFIG WORKDIR: one guest run; the guest log lands in WORKDIR.
run() {
  local config=$1 work=$2 args=()
  args=(--workload bench_read --initrd "$initrd" --qemu "$qemu" --work-dir "$work" --keep
    --qemu-args "-L /usr/share/seabios -L /usr/share/qemu")
  case $config in
    daxfsd-dax) args+=(--fs-device-opts "cache-size=$window,num-request-queues=2" --mount-opts dax=always
      --daemon "$daxfsd --socket-path {sock} --shared-dir {dir} --tag {tag} --cache-size $window --num-request-queues 2") ;;
    alioth-dax) args+=(--fs-device-opts "cache-size=$window,num-request-queues=2" --mount-opts dax=always
      --daemon "$alioth vu --socket {sock} fs --param tag={tag},path={dir},dax_window=$(numfmt --from=iec "$window")") ;;
    daxfsd-auto) args+=(--daemon "$daxfsd --socket-path {sock} --shared-dir {dir} --tag {tag} --cache auto") ;;
    daxfsd-never) args+=(--daemon "$daxfsd --socket-path {sock} --shared-dir {dir} --tag {tag} --cache never") ;;
    virtiofsd-auto) args+=(--daemon "$virtiofsd --socket-path {sock} --shared-dir {dir} --tag {tag} --cache auto --sandbox none") ;;
    virtiofsd-never) args+=(--daemon "$virtiofsd --socket-path {sock} --shared-dir {dir} --tag {tag} --cache never --sandbox none") ;;
    *) echo "bench-guest: unknown configuration $config" >&2; exit 2 ;;
  esac
  "$here/run-guest.sh" "${args[@]}" >"$work.out" 2>&1
}

value_of() { sed -n "s/^.*DAXFSD-VALUE $2 \([0-9]*\).*$/\1/p" "$1" | tail -n 1; }

declare -A best_cold best_warm
tmp=$(mktemp -d /tmp/daxfsd-bench.XXXXXX)
# Alternate configurations within each round, so drift hits all alike.
for r in $(seq 1 "$runs"); do
  for c in $configs; do
    w=$tmp/$c.$r
    if ! run "$c" "$w"; then
      echo "bench-guest: $c run $r failed; see $w.out" >&2
      exit 1
    fi
    cold=$(value_of "$w/guest.log" bench.cold.ns)
    warm=$(value_of "$w/guest.log" bench.warm.ns)
    echo "bench-guest: $c run $r: cold $((cold / 1000000)) ms, warm $((warm / 1000000)) ms" >&2
    if [ -z "${best_cold[$c]:-}" ] || [ "$cold" -lt "${best_cold[$c]}" ]; then best_cold[$c]=$cold; fi
    if [ -z "${best_warm[$c]:-}" ] || [ "$warm" -lt "${best_warm[$c]}" ]; then best_warm[$c]=$warm; fi
  done
done

mbps() { awk -v ns="$1" 'BEGIN { printf "%.1f", 64 / (ns / 1e9) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "| configuration | cold pass ms | cold MB/s | warm pass ms | warm MB/s |"
echo "| --- | --- | --- | --- | --- |"
for c in $configs; do
  echo "| $c | $((best_cold[$c] / 1000000)) | $(mbps "${best_cold[$c]}") | $((best_warm[$c] / 1000000)) | $(mbps "${best_warm[$c]}") |"
done
echo
# speedup A B: how many times faster A is than B (B's time / A's time).
speedup() {
  local a=$1 b=$2 pass=$3
  [ -n "${best_cold[$a]:-}" ] && [ -n "${best_cold[$b]:-}" ] || return 0
  if [ "$pass" = cold ]; then
    echo "- $a vs $b, $pass pass: $(ratio "${best_cold[$b]}" "${best_cold[$a]}")x"
  else
    echo "- $a vs $b, $pass pass: $(ratio "${best_warm[$b]}" "${best_warm[$a]}")x"
  fi
}
echo "Speed-ups (best of $runs, higher is better for the first):"
for p in cold warm; do
  speedup daxfsd-dax alioth-dax $p
  speedup daxfsd-dax daxfsd-auto $p
  speedup daxfsd-dax daxfsd-never $p
  speedup daxfsd-auto virtiofsd-auto $p
  speedup daxfsd-never virtiofsd-never $p
done
rm -rf "$tmp"
