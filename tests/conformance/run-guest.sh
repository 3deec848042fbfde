#!/usr/bin/env bash
# POSIX conformance inside the TCG test guest over virtio-fs: boots the guest
# of tests/guest/ with pjdfstest added to its initramfs, runs the suite on the
# virtio-fs mount (workload "pjdfstest") against one daemon, and compares the
# failures with that daemon's known ones.
#
#   run-guest.sh [--daemon daxfsd|virtiofsd|PATH] [--out DIR] [--known FILE]
#                [--filter PATTERN] [-- RUN-GUEST-ARGS...]
#
#   --daemon    daxfsd (default: <repo>/target/debug/daxfsd, built if
#               missing), virtiofsd (upstream, installed into .cache by
#               tests/tools/install-virtiofsd.sh) or a binary taking
#               virtiofsd's flags
#   --out DIR   results.tsv (test, status), failures.txt; default: a new
#               temp dir
#   --known F   tests expected to fail (default: known-failures-<daemon>.txt
#               beside this script when it exists; "" for none)
#   --filter P  run only the pjdfstest tests matching P
#   after --     passed on to tests/guest/run-guest.sh (e.g. --daemon-args
#               "--cache never", --mem 1G, --keep)
#
# Exits 0 when the suite ran to its summary in the guest and every failure is
# a known one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
daemon=daxfsd
out=
known="(default)"
filter=
die() { echo "conformance/run-guest: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --daemon) daemon=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --known) known=$2; shift 2 ;;
    --filter) filter=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case $daemon in
  daxfsd)
    bin=$repo/target/debug/daxfsd
    [ -x "$bin" ] || (cd "$repo" && cargo build -p daxfsd >&2)
    name=daxfsd ;;
  virtiofsd) bin=$("$repo/tests/tools/install-virtiofsd.sh"); name=virtiofsd ;;
  *) bin=$daemon; name=$(basename "$daemon") ;;
esac
[ -x "$bin" ] || die "no daemon binary at $bin"
if [ "$known" = "(default)" ]; then
  known=$here/known-failures-$name.txt
  [ -r "$known" ] || known=
fi
if [ -z "$out" ]; then out=$(mktemp -d /tmp/daxfsd-conformance-guest.XXXXXX); fi
mkdir -p "$out"

pjdfstest=$("$here/install-pjdfstest.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=$("$repo/tests/guest/build-initramfs.sh" "$work/base.cpio.gz")
# A second archive with pjdfstest, its configuration and its users; the kernel
# unpacks concatenated archives in order.
extra=$work/extra
mkdir -p "$extra/bin" "$extra/etc"
strip -o "$extra/bin/pjdfstest" "$pjdfstest"
install -m 0644 "$here/etc-passwd" "$extra/etc/passwd"
install -m 0644 "$here/etc-group" "$extra/etc/group"
install -m 0644 "$here/etc-nsswitch.conf" "$extra/etc/nsswitch.conf"
install -m 0644 "$here/pjdfstest.toml" "$extra/etc/pjdfstest.toml"
find "$extra" -exec touch -h -d @0 {} +
(cd "$extra" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -9 >"$work/extra.cpio.gz"
cat "$base" "$work/extra.cpio.gz" >"$work/initramfs.cpio.gz"

append=
[ -z "$filter" ] || append="daxfsd.arg.pjdfstest_filter=$filter"
echo "conformance/run-guest: $name ($bin), results in $out" >&2
export DAXFSD_PJDFSTEST_OUT=$out DAXFSD_PJDFSTEST_KNOWN=$known
"$repo/tests/guest/run-guest.sh" --workload pjdfstest --daemon-bin "$bin" \
  --initrd "$work/initramfs.cpio.gz" --timeout 1800 ${append:+--append "$append"} "$@"
