# Workload "stopped_server" (guest side): a read blocked on the host holds
# only its own daemon thread. fusemnt/ in the share is a FUSE mount on the
# host (stopped_server.host.sh). A reader opens fusemnt/data.bin, the host
# stops that mount's server (SIGSTOP), and the reader's read blocks in the
# daemon; meanwhile reads, a write with fsync, lookups, stats and a listing
# of other files must complete within OTHERS_LIMIT seconds, with the reader
# still blocked. Then the host resumes the server and the read completes
# with the right bytes. Run with one request queue and --thread-pool-size 4;
# with --thread-pool-size 0 the other operations wait behind the read and
# the step `others_complete` fails (the host resumes the server after its
# own limit, so the run still ends).
# shellcheck shell=sh
# ls on purpose: its readdir through the mount is what is tested.
# shellcheck disable=SC2012

OTHERS_LIMIT=30

# wait_for TENTHS COMMAND...: true once COMMAND is, false after TENTHS tries.
wait_for() {
  _n=$1
  shift
  while [ "$_n" -gt 0 ]; do
    "$@" && return 0
    _n=$((_n - 1))
    sleep 0.1
  done
  "$@"
}

others_ended() { [ -s /tmp/others.done ] || ! kill -0 "$(cat /tmp/others.pid)" 2>/dev/null; }

# Opens the file, then waits for a line on /tmp/go without starting any
# process: a child that inherited descriptor 3 would close it on exit, and
# its FLUSH would block on the stopped server too.
reader() {
  exec 3<"$MNT/fusemnt/data.bin"
  : >/tmp/reader.opened
  # shellcheck disable=SC3045  # busybox sh's read has -t
  read -r -t 300 _ <>/tmp/go
  md5sum <&3 | cut -d' ' -f1 >/tmp/reader.part
  mv /tmp/reader.part /tmp/reader.md5
}

opens_the_file() {
  want=$(cat "$MNT/data.md5")
  expect_eq "fusemnt/data.bin md5" "$(md5sum "$MNT/fusemnt/data.bin" | cut -d' ' -f1)" "$want"
  value before.md5 "$want"
  mkfifo /tmp/go
  reader </dev/null >/tmp/reader.log 2>&1 &
  echo $! >/tmp/reader.pid
  wait_for 300 test -e /tmp/reader.opened || fail "reader: $(cat /tmp/reader.log)"
}

stops_the_server() {
  # The reader's read must reach the daemon, not the guest's page cache.
  drop_caches
  : >"$MNT/stop-server"
  wait_for 300 test -e "$MNT/server-stopped" || fail "the host did not stop the FUSE server within 30 s"
}

others() {
  # The host creates read-blocked once the reader's request waits for the
  # stopped server: from then on the reader holds a daemon thread.
  wait_for 300 test -e "$MNT/read-blocked" || fail "no read-blocked from the host within 30 s"
  start=$(cut -d' ' -f1 /proc/uptime)
  expect_eq "other/host.bin md5" "$(md5sum "$MNT/other/host.bin" | cut -d' ' -f1)" "$(cat "$MNT/other.md5")"
  expect_eq "other/hello.txt" "$(cat "$MNT/other/hello.txt")" "hello from the host"
  dd if=/dev/urandom of=/tmp/new.bin bs=64k count=16 status=none
  dd if=/tmp/new.bin of="$MNT/other/new.bin" bs=64k conv=fsync status=none
  expect_eq "other/new.bin size" "$(stat -c %s "$MNT/other/new.bin")" 1048576
  [ ! -e "$MNT/other/absent" ] || fail "other/absent exists"
  mkdir "$MNT/other/dir"
  expect_eq "ls other" "$(ls "$MNT/other" | tr '\n' ' ')" "dir hello.txt host.bin new.bin "
  awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }' >/tmp/others.done
}

others_complete() {
  echo go 1<>/tmp/go
  others </dev/null >/tmp/others.log 2>&1 &
  echo $! >/tmp/others.pid
  wait_for $((OTHERS_LIMIT * 10)) others_ended || true
  [ -s /tmp/others.done ] || kill -0 "$(cat /tmp/others.pid)" ||
    fail "other operations failed: $(tail -n 3 /tmp/others.log)"
  [ -s /tmp/others.done ] ||
    fail "lookups, reads and writes of other files did not complete within ${OTHERS_LIMIT} s" \
      "while the read of fusemnt/data.bin was blocked on the stopped server" \
      "(stuck at: $(tail -n 1 /tmp/others.log))"
  value others.seconds "$(cat /tmp/others.done)"
  value new.md5 "$(md5sum /tmp/new.bin | cut -d' ' -f1)"
  [ ! -e /tmp/reader.md5 ] || fail "the read of fusemnt/data.bin completed while its server was stopped"
  kill -0 "$(cat /tmp/reader.pid)" || fail "the reader is gone: $(cat /tmp/reader.log)"
}

read_completes_after_resume() {
  : >"$MNT/resume-server"
  wait_for 600 test -e /tmp/reader.md5 || fail "the read of fusemnt/data.bin did not complete within 60 s of the resume"
  blocked=$(cat /tmp/reader.md5)
  value blocked.md5 "$blocked"
  expect_eq "fusemnt/data.bin md5 (the blocked read)" "$blocked" "$(cat "$MNT/data.md5")"
}

step opens_the_file opens_the_file
step stops_the_server stops_the_server
step others_complete others_complete
step read_completes_after_resume read_completes_after_resume
