#!/usr/bin/env bash
# Benchmark of the Debian root-filesystem workload (run-rootfs.sh): wall time
# per phase and in total for daxfsd with DAX (32 MiB and 1 GiB windows),
# daxfsd without DAX and upstream virtiofsd, best of N runs (configurations
# interleaved per round), with ratios and the window metrics of the DAX runs.
# Results go in docs/benchmarks.md with this command line.
#   tests/guest/bench-rootfs.sh [--runs N] [--daemon-bin PATH] [--configs LIST]
#                               [--modules N] [--phases LIST]
# LIST: comma-separated of dax32m, dax1g, nodax, virtiofsd (default all).
# --modules and --phases are passed to run-rootfs.sh (defaults 2 and its
# default phases: the CI workload; a bigger project thrashes a 32 MiB window
# for an hour under TCG).
# Needs a release daxfsd (default target/release/daxfsd) and virtiofsd
# (tests/tools/install-virtiofsd.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=3
daemon_bin=$repo/target/release/daxfsd
configs=dax32m,dax1g,nodax,virtiofsd
modules=2
phases=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --daemon-bin) daemon_bin=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --modules) modules=$2; shift 2 ;;
    --phases) phases=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--daemon-bin PATH] [--configs LIST] [--modules N] [--phases LIST]" >&2; exit 2 ;;
  esac
done
[ -x "$daemon_bin" ] || { echo "bench-rootfs: build it first: cargo build --release -p daxfsd" >&2; exit 2; }
out=$(mktemp -d /tmp/daxfsd-bench-rootfs.XXXXXX)
virtiofsd=
if [[ ,$configs, == *,virtiofsd,* ]]; then
  virtiofsd=$("$repo/tests/tools/install-virtiofsd.sh")
fi
for r in $(seq 1 "$runs"); do
  for c in ${configs//,/ }; do
    case $c in
      dax32m) args=(--daemon-bin "$daemon_bin" --window 32M) ;;
      dax1g) args=(--daemon-bin "$daemon_bin" --window 1G) ;;
      nodax) args=(--daemon-bin "$daemon_bin" --window 0) ;;
      virtiofsd) args=(--virtiofsd "$virtiofsd") ;;
      *) echo "bench-rootfs: unknown configuration $c" >&2; exit 2 ;;
    esac
    args+=(--modules "$modules")
    [ -n "$phases" ] && args+=(--phases "$phases")
    echo "bench-rootfs: round $r/$runs: $c" >&2
    if "$here/run-rootfs.sh" "${args[@]}" >"$out/$c.$r.log" 2>"$out/$c.$r.err"; then
      grep '^rootfs-phases:' "$out/$c.$r.log" | sed "s/^/$c $r /" >>"$out/results"
      grep 'metrics:' "$out/$c.$r.err" | sed "s/^/$c $r /" >>"$out/metrics" || true
    else
      echo "bench-rootfs: $c round $r FAILED (logs: $out/$c.$r.err)" >&2
      echo "$c $r FAILED" >>"$out/results"
    fi
  done
done
python3 - "$out/results" "$out/metrics" "$configs" <<'PY'
import sys, re, collections
results, metrics, configs = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
best = collections.defaultdict(dict)
failed = collections.Counter()
for line in open(results):
    parts = line.split()
    cfg = parts[0]
    if parts[2] == "FAILED":
        failed[cfg] += 1
        continue
    vals = dict(re.findall(r"(\w+)=([0-9.]+)s?", line))
    for k, v in vals.items():
        if k in ("window", "protocol", "dax"):
            continue
        v = float(v)
        if k not in best[cfg] or v < best[cfg][k]:
            best[cfg][k] = v
phases = ["compileall", "make", "git", "randio", "window_io", "rmrf", "total"]
print("| phase | " + " | ".join(configs) + " |")
print("| --- | " + " | ".join("---" for _ in configs) + " |")
for p in phases:
    print(f"| {p} | " + " | ".join(f"{best[c].get(p, float('nan')):.1f} s" for c in configs) + " |")
print()
base = "virtiofsd" if "virtiofsd" in configs else configs[-1]
print(f"ratios (time of {base} / time of the configuration; > 1 is faster):")
for c in configs:
    if c == base or "total" not in best[c] or "total" not in best[base]:
        continue
    row = ", ".join(f"{p} {best[base][p] / best[c][p]:.2f}x" for p in phases if p in best[c] and p in best[base] and best[c][p] > 0)
    print(f"  {c} vs {base}: {row}")
if "nodax" in configs and "dax32m" in configs and "total" in best["nodax"] and "total" in best["dax32m"]:
    print(f"  dax32m vs nodax: total {best['nodax']['total'] / best['dax32m']['total']:.2f}x")
for c, n in failed.items():
    print(f"FAILED runs: {c}: {n}")
try:
    print("\nwindow metrics per run:")
    for line in open(metrics):
        print("  " + line.strip())
except FileNotFoundError:
    pass
PY
echo "bench-rootfs: raw logs in $out" >&2
