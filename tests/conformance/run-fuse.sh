#!/usr/bin/env bash
# POSIX conformance through daxfsd's host /dev/fuse transport: mounts a
# scratch share with `daxfsd --mount-point`, runs pjdfstest on it, unmounts
# with SIGTERM, and compares the failures with a list of known ones.
#
#   run-fuse.sh [--daemon-bin PATH] [--daemon-args ARGS] [--out DIR]
#               [--known FILE] [PATTERN...]
#
#   --daemon-bin PATH  default <repo>/target/debug/daxfsd (built if missing)
#   --daemon-args ARGS extra daxfsd flags (e.g. "--cache never --xattr")
#   --out DIR          results.txt (pjdfstest's output), results.tsv (test,
#                      status), daemon.log; default: a new temp dir
#   --known FILE       tests expected to fail, one name a line (default
#                      known-failures-fuse.txt beside this script; "" for none)
#   PATTERN...         pjdfstest test-name filters (default: every test)
#
# DAXFSD_PJDFSTEST_TIMEOUT (seconds, default 1800) bounds the pjdfstest run;
# the mount gets 10 s to appear and the daemon 30 s to unmount and exit on
# SIGTERM (then SIGKILL): a hang fails the run with a message.
#
# Needs root (mount(2), user switching). Everything runs in a private mount
# namespace: the FUSE mount and the /etc/{passwd,group,nsswitch.conf} bound
# over the host's (pjdfstest's "nobody" and "tests" users) exist only there.
# Exits 0 when pjdfstest ran to its summary, the daemon unmounted and exited
# cleanly, and every failure is a known one; 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"

daemon_bin=$repo/target/debug/daxfsd
daemon_args=
out=
known=$here/known-failures-fuse.txt
patterns=()
die() { echo "run-fuse: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --daemon-bin) daemon_bin=$2; shift 2 ;;
    --daemon-args) daemon_args=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --known) known=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) patterns+=("$1"); shift ;;
  esac
done
[ "$(id -u)" = 0 ] || die "needs root (mount(2) and pjdfstest's user switching)"

if [ "${DAXFSD_CONFORMANCE_NS:-}" != 1 ]; then
  pjdfstest=$("$here/install-pjdfstest.sh")
  if [ ! -x "$daemon_bin" ] && [ "$daemon_bin" = "$repo/target/debug/daxfsd" ]; then
    (cd "$repo" && cargo build -p daxfsd >&2)
  fi
  [ -x "$daemon_bin" ] || die "no daemon binary at $daemon_bin"
  if [ -z "$out" ]; then out=$(mktemp -d /tmp/daxfsd-conformance.XXXXXX); fi
  mkdir -p "$out"
  export DAXFSD_CONFORMANCE_NS=1 PJDFSTEST_BIN=$pjdfstest
  exec unshare --mount --propagation private "$0" --daemon-bin "$daemon_bin" \
    --daemon-args "$daemon_args" --out "$out" --known "$known" ${patterns[@]+"${patterns[@]}"}
fi

# --- inside the private mount namespace ---
for f in passwd group nsswitch.conf; do
  mount --bind "$here/etc-$f" "/etc/$f"
done
work=$(mktemp -d /tmp/daxfsd-fuse.XXXXXX)
shared=$work/shared mnt=$work/mnt secondary=$work/secondary
mkdir -p "$shared" "$mnt" "$secondary"
# pjdfstest switches to unprivileged users, who must reach the mount.
chmod 755 "$work"
daemon_pid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  [ -z "$daemon_pid" ] || stop_pid "$daemon_pid" 10 "daxfsd" 2>/dev/null || true
  timeout 10 umount -l "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r -a extra <<<"$daemon_args"
echo "run-fuse: $daemon_bin --shared-dir $shared --mount-point $mnt ${extra[*]}" >&2
"$daemon_bin" --shared-dir "$shared" --mount-point "$mnt" ${extra[@]+"${extra[@]}"} \
  >"$out/daemon.log" 2>&1 &
daemon_pid=$!
mounted() { awk -v m="$mnt" '$5 == m && $0 ~ / - fuse\.daxfsd / { f = 1 } END { exit !f }' /proc/self/mountinfo; }
# shellcheck disable=SC2317  # called by wait_until
mounted_while_up() {
  gone "$daemon_pid" && die "daemon exited: $(tail -n 5 "$out/daemon.log")"
  mounted
}
wait_until 10 "the FUSE mount on $mnt" mounted_while_up || die "no FUSE mount on $mnt"

# pjdfstest creates its scratch files in the current directory's tree.
mkdir "$mnt/pjdfstest"
start=$(date +%s)
set +e
pjd_timeout=${DAXFSD_PJDFSTEST_TIMEOUT:-1800}
(cd "$mnt/pjdfstest" && run_bounded "$pjd_timeout" "pjdfstest on $mnt" "$PJDFSTEST_BIN" \
  -c "$here/pjdfstest.toml" -p "$mnt/pjdfstest" -s "$secondary" \
  ${patterns[@]+"${patterns[@]}"}) >"$out/results.txt" 2>&1
pjd_rc=$?
set -e
echo "run-fuse: pjdfstest exit $pjd_rc after $(( $(date +%s) - start )) s" >&2

daemon_rc=0
stop_pid "$daemon_pid" 30 "daxfsd (unmount and exit on SIGTERM)" || daemon_rc=$?
daemon_pid=
status=0
if [ "$pjd_rc" = 124 ] || [ "$pjd_rc" = 137 ]; then
  echo "run-fuse: FAIL: pjdfstest did not finish within ${pjd_timeout}s" >&2
  status=1
fi
if mounted; then echo "run-fuse: FAIL: still mounted after SIGTERM" >&2; status=1; fi
if [ "$daemon_rc" != 0 ]; then echo "run-fuse: FAIL: daemon exit $daemon_rc" >&2; status=1; fi
if grep -q 'panicked at' "$out/daemon.log"; then echo "run-fuse: FAIL: daemon panicked" >&2; status=1; fi

"$here/summarize.sh" "$out/results.txt" >"$out/results.tsv" || status=1
summary=$(grep '^Summary:' "$out/results.txt" || true)
[ -n "$summary" ] || { echo "run-fuse: FAIL: pjdfstest gave no summary" >&2; tail -n 20 "$out/results.txt" >&2; status=1; }
echo "run-fuse: $summary" >&2
unexpected=$(awk -F'\t' '$2 == "failed" { print $1 }' "$out/results.tsv" |
  { if [ -n "$known" ]; then grep -vxF -f <(grep -v '^#' "$known") || true; else cat; fi; })
if [ -n "$unexpected" ]; then
  echo "run-fuse: FAIL: unexpected failures:" >&2
  while read -r t; do echo "  $t"; done <<<"$unexpected" >&2
  status=1
fi
echo "run-fuse: results in $out" >&2
exit "$status"
