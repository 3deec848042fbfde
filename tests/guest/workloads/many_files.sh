# Workload "many_files" (guest side): issue 15, a guest that knows more files
# than the daemon may hold descriptors. 30,000 files in one directory are
# listed and stat'ed twice (ls -ln: READDIRPLUS, then LOOKUP/GETATTR once the
# 1 s cache of --cache auto expired) while the daemon runs with
# --rlimit-nofile 4096 (many_files.args). Every entry must be listed with no
# error, and the daemon must still serve afterwards (a write, a read back).
# many_files.host.sh creates the files and checks what the guest saw.
# shellcheck shell=sh

MANY=$(cat "$MNT/many.count")
LAST=$(printf f%06d $((MANY - 1)))

# list_and_stat ROUND: every entry listed and stat'ed, no error.
list_and_stat() {
  _t0=$(cut -d" " -f1 /proc/uptime)
  ls -ln "$MNT/many" >/tmp/ls.out 2>/tmp/ls.err || fail "ls -ln round $1: $(head -n 3 /tmp/ls.err)"
  # Seconds the listing took (benches/guest-many-files.sh reads them).
  value "many.seconds$1" "$(awk -v a="$_t0" -v b="$(cut -d" " -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }')"
  expect_eq "errors in round $1" "$(wc -l </tmp/ls.err)" 0
  expect_eq "files listed in round $1" "$(grep -c '^-' /tmp/ls.out)" "$MANY"
  value "many.round$1" "$(grep -c '^-' /tmp/ls.out)"
  # The attributes and names the guest caches for 1 s must be asked again.
  sleep 2
}

still_serving() {
  expect_eq "first file" "$(cat "$MNT/many/f000000")" 0
  expect_eq "last file" "$(cat "$MNT/many/$LAST")" $((MANY - 1))
  echo alive >"$MNT/alive.txt"
  drop_caches
  expect_eq "alive.txt" "$(cat "$MNT/alive.txt")" alive
}

step many_round1 list_and_stat 1
step many_round2 list_and_stat 2
step still_serving still_serving
