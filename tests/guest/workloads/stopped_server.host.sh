#!/usr/bin/env bash
# Workload "stopped_server", host side (see stopped_server.sh). prepare mounts
# a directory from outside the share at SHARED/fusemnt, served over /dev/fuse
# by a second daxfsd (--cache never: every read reaches that server), and
# starts a background keeper that owns the server: when the guest creates
# `stop-server` it stops the server (SIGSTOP) and creates `server-stopped`;
# once a request waits for the stopped server (the mount's fusectl `waiting`
# count: the guest's read went through the daemon into the host's FUSE
# mount) it creates `read-blocked`; when the guest creates `resume-server`,
# or STOP_LIMIT seconds after the
# stop in any case, it resumes it (SIGCONT); when verify asks (or run-guest.sh
# is gone, having failed before verify) it stops the server with SIGTERM,
# which unmounts it, and records the exit status. Every wait is bounded.
#
# DAXFSD_FUSE_SERVER_BIN: the FUSE server (default <repo>/target/debug/daxfsd).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

fuse_bin=${DAXFSD_FUSE_SERVER_BIN:-$(cd "$here/../../.." && pwd)/target/debug/daxfsd}
# Keep in sync with stopped_server.sh: the size of fusemnt/data.bin.
LEN=4194304
# The guest gives the other operations 30 s; past this the server resumes
# anyway, so that a run whose guest is stuck behind the read still ends.
STOP_LIMIT=60

log() { echo "keeper: $(date -u +%T.%N | cut -c1-12) $*"; }
# poll TENTHS COMMAND...: true once COMMAND is, false after TENTHS tries.
poll() {
  local n=$1 i
  shift
  for ((i = 0; i < n; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  "$@"
}
mounted() { awk -v m="$1" '$5 == m && / - fuse\.daxfsd / { f = 1 } END { exit !f }' /proc/self/mountinfo; }
# run_over: verify asked to finish, or run-guest.sh (pid $watch) is gone.
run_over() { [ -e "$state/finish" ] || ! kill -0 "$watch" 2>/dev/null; }
or_over() { "$@" || run_over; }
# waiting CONN: requests of FUSE connection CONN not answered yet, from a
# fusectl mounted in a private mount namespace (the host's mounts stay).
waiting() {
  # shellcheck disable=SC2016  # expanded by the inner sh
  unshare --mount --propagation private sh -c \
    'mount -t fusectl fusectl /sys/fs/fuse/connections && cat "/sys/fs/fuse/connections/$1/waiting"' \
    sh "$1" 2>/dev/null
}
read_waits() { [ "$(waiting "$1")" -ge 1 ] 2>/dev/null; }

# keeper SHARED STATE WATCH: the FUSE server's owner (see the top).
keeper() {
  shared=$1 state=$2 watch=$3
  local mnt=$shared/fusemnt pid
  # Whatever fails on the way, the end below must run.
  set +e
  # The subshell reaps the server and records its status.
  ("$fuse_bin" --shared-dir "$state/fuse-dir" --mount-point "$mnt" --cache never \
    --sandbox none >"$state/fuse-server.log" 2>&1 &
  echo $! >"$state/server.pid"
  wait $! && echo 0 >"$state/server.rc" || echo $? >"$state/server.rc") &
  poll 50 test -s "$state/server.pid" || { log "no FUSE server pid"; return; }
  pid=$(cat "$state/server.pid")
  if poll 100 mounted "$mnt"; then
    log "FUSE server $pid mounted $mnt"
    touch "$state/mounted"
    stop_and_resume "$shared" "$pid" \
      "$(awk -v m="$mnt" '$5 == m { split($3, d, ":"); print d[2] }' /proc/self/mountinfo)"
  else
    log "no FUSE mount on $mnt after 10 s"
  fi
  poll 3000 run_over || log "verify did not come within 300 s"
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  if poll 100 test -e "$state/server.rc"; then
    log "FUSE server exited with status $(cat "$state/server.rc") on SIGTERM"
  else
    log "FUSE server still running 10 s after SIGTERM: killed"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if mounted "$mnt"; then
    log "$mnt still mounted: lazy unmount"
    umount -l "$mnt" || true
  fi
  log finished
}

stop_and_resume() {
  local shared=$1 pid=$2 conn=$3
  poll 3000 or_over test -e "$shared/stop-server"
  [ -e "$shared/stop-server" ] || { log "the guest never asked to stop the server"; return; }
  kill -STOP "$pid" || { log "cannot stop the FUSE server $pid"; return; }
  log "FUSE server stopped (its connection: $conn)"
  touch "$shared/server-stopped"
  if poll 300 or_over read_waits "$conn" && read_waits "$conn"; then
    waiting "$conn" >"$state/waiting"
    log "$(cat "$state/waiting") request(s) wait for the stopped server"
    touch "$shared/read-blocked"
  else
    log "no request reached the stopped server within 30 s"
  fi
  if poll $((STOP_LIMIT * 10)) or_over test -e "$shared/resume-server" &&
    [ -e "$shared/resume-server" ]; then
    echo guest >"$state/resumed-by"
  else
    log "the guest did not ask to resume the server within ${STOP_LIMIT} s (or the run ended)"
    echo keeper >"$state/resumed-by"
  fi
  kill -CONT "$pid"
  log "FUSE server resumed (asked by: $(cat "$state/resumed-by"))"
}

prepare() {
  local shared=$1 state=$2
  [ "$(id -u)" = 0 ] || { echo "stopped_server: needs root (a FUSE mount on the host)" >&2; return 1; }
  [ -x "$fuse_bin" ] ||
    { echo "stopped_server: no FUSE server at $fuse_bin (cargo build -p daxfsd, or DAXFSD_FUSE_SERVER_BIN)" >&2; return 1; }
  mkdir "$state/fuse-dir" "$shared/fusemnt" "$shared/other"
  head -c "$LEN" /dev/urandom >"$state/fuse-dir/data.bin"
  md5_of "$state/fuse-dir/data.bin" >"$shared/data.md5"
  head -c 1048576 /dev/urandom >"$shared/other/host.bin"
  md5_of "$shared/other/host.bin" >"$shared/other.md5"
  echo "hello from the host" >"$shared/other/hello.txt"
  # Detached from run-guest.sh's output; it watches run-guest.sh ($PPID).
  keeper "$shared" "$state" "$PPID" </dev/null >"$state/keeper.log" 2>&1 &
  if ! poll 150 test -e "$state/mounted"; then
    cat "$state/keeper.log" "$state/fuse-server.log" >&2
    echo "stopped_server: no FUSE mount at $shared/fusemnt within 15 s" >&2
    return 1
  fi
}

verify() {
  local shared=$1 state=$2 log=$3 want
  touch "$state/finish"
  check keeper.done poll 150 grep -q 'keeper: .* finished$' "$state/keeper.log"
  sed 's/^/  /' "$state/keeper.log" >&2
  want=$(md5_of "$state/fuse-dir/data.bin")
  check before.md5 eq "fusemnt/data.bin md5 before the stop" "$(guest_value "$log" before.md5)" "$want"
  check blocked.md5 eq "fusemnt/data.bin md5 of the blocked read" "$(guest_value "$log" blocked.md5)" "$want"
  check new.md5 eq "other/new.bin md5 (written while blocked)" "$(md5_of "$shared/other/new.bin")" \
    "$(guest_value "$log" new.md5)"
  check read-blocked test "$(cat "$state/waiting" 2>/dev/null)" -ge 1
  check resumed-by eq "who resumed the FUSE server" "$(cat "$state/resumed-by" 2>/dev/null)" guest
  check server.exit eq "FUSE server exit status" "$(cat "$state/server.rc" 2>/dev/null)" 0
  check server.gone eq "FUSE server process" "$(kill -0 "$(cat "$state/server.pid")" 2>/dev/null && echo alive)" ""
  check unmounted eq "$shared/fusemnt" "$(mounted "$shared/fusemnt" && echo mounted)" ""
  check server.no-panic eq "FUSE server panics" "$(grep -c 'panicked at' "$state/fuse-server.log")" 0
  echo "stopped_server: the other operations took $(guest_value "$log" others.seconds) s" \
    "while the read was blocked ($(cat "$state/waiting" 2>/dev/null) request(s) waiting for the stopped server)" >&2
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
