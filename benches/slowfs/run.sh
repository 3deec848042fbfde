#!/usr/bin/env bash
# The thread-pool benchmark of issue 15: one request queue, 16 READs in
# flight, on a shared tree whose reads take milliseconds (slowfs.py, a
# passthrough FUSE mount with a delay on each read, mounted where the bench
# makes its tree). daxfsd and virtiofsd side by side, with a pool of
# --pool threads and without one (--thread-pool-size 0).
#
#   benches/slowfs/run.sh [--read-delay-ms N] [--pool N] [--pairs N]
#
# Needs root (FUSE mount) and the release bench (built here); installs
# python3-fusepy (Debian) and virtiofsd (tests/tools/install-virtiofsd.sh)
# when missing. Prints the bench's tables, one per pool setting.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
delay=2 pool=16 pairs=3
while [ $# -gt 0 ]; do
  case $1 in
    --read-delay-ms) delay=$2; shift 2 ;;
    --pool) pool=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "slowfs: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! /usr/bin/python3 -c 'import fusepy' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q python3-fusepy >/dev/null
fi
export DAXFSD_VIRTIOFSD_BIN=${DAXFSD_VIRTIOFSD_BIN:-$("$repo/tests/tools/install-virtiofsd.sh")}
(cd "$repo" && cargo build --release --locked -p daxfsd -p daxfsd-bench)

work=$(mktemp -d /tmp/daxfsd-slowfs.XXXXXX)
mkdir "$work/root" "$work/mnt"
/usr/bin/python3 "$repo/benches/slowfs/slowfs.py" "$work/root" "$work/mnt" \
  --read-delay-ms "$delay" &
server=$!
cleanup() {
  umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for ((i = 0; i < 100; i++)); do
  mountpoint -q "$work/mnt" && break
  kill -0 "$server" 2>/dev/null || { echo "slowfs: the FUSE server exited" >&2; exit 1; }
  sleep 0.1
done
mountpoint -q "$work/mnt" || { echo "slowfs: not mounted after 10 s" >&2; exit 1; }

echo "slowfs: reads take $delay ms; one request queue, 16 in flight"
for size in 0 "$pool"; do
  echo
  echo "### --thread-pool-size $size (both daemons)"
  timeout 900 "$repo/target/release/daxfsd-bench" --sections ops --queues 1 --only read4k \
    --pairs "$pairs" --dir "$work/mnt" \
    --daxfsd-arg=--thread-pool-size="$size" --virtiofsd-arg=--thread-pool-size="$size"
done
