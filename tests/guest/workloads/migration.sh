# Workload "migration" (guest side), driven by run-migration.sh: the guest
# builds state that the vhost-user-fs daemon must carry to the migration
# destination, prints DAXFSD-MIGRATION READY, and waits for the host's marker
# mig/migrated (created once the migration ended, either way). Then every
# check runs (soft_step: a failure does not stop the others) on whichever side
# the guest now runs, and the last step fails naming the failed checks.
#
# State held across the migration: the cwd (mig/work), descriptor 3 reading
# mig/data/read.bin at offset 4096, descriptor 4 appending to mig/work/log.txt,
# descriptor 5 an open directory (mig/work/sub, read with readdir-fd), and the
# looked-up path mig/a/b/c/d/e/f/deep.txt. While it waits, the guest keeps the
# daemon writing guest memory: it reads mig/data/churn/N.bin (eight files of
# their own bytes) into its page cache, so pages the daemon fills while RAM is
# copied reach the destination only if the daemon logs them as dirty; the
# check page_cache reads them back from the cache on the other side.
#
# Kernel command line (daxfsd.arg.*):
#   fd3=data|eio   what reading the rest of descriptor 3 must give (default
#                  data; eio when the host removed read.bin and the
#                  destination daemon runs with --migration-on-error guest-error)
#   wait=SECS      limit for the host's marker (default 600)
# Published: DAXFSD-VALUE fd3 data|eio|wrong-bytes|error (what the read gave).
# shellcheck shell=sh

M=$MNT/mig

prepared() {
  for f in data/read.bin data/read.head.md5 data/read.tail.md5 work/sub a/b/c/d/e/f/deep.txt; do
    [ -e "$M/$f" ] || fail "$M/$f is missing (migration.host.sh prepare)"
  done
  cp "$M/data/read.tail.md5" /tmp/read.tail.md5
  cp "$M/data/churn.md5" /tmp/churn.md5
  ls "$M/work/sub" >/tmp/sub.list
  expect_eq "sub listing" "$(tr '\n' ' ' </tmp/sub.list)" "one three two "
}

# Runs with descriptors 3, 4 and 5 open (inherited by the step's subshell,
# sharing their offsets with the workload's shell).
state_built() {
  expect_eq "cwd" "$(pwd)" "$M/work"
  dd bs=4096 count=1 status=none <&3 >/tmp/read.head
  expect_eq "read.bin head md5" "$(md5sum </tmp/read.head | cut -d' ' -f1)" "$(cat ../data/read.head.md5)"
  echo before >&4
  expect_eq "readdir-fd 5" "$(readdir-fd 5 | sort)" "$(cat /tmp/sub.list)"
  stat -c %i "$M/a/b/c/d/e/f/deep.txt" >/tmp/deep.ino
  expect_eq "deep.txt" "$(cat "$M/a/b/c/d/e/f/deep.txt")" "deep file"
  echo "DAXFSD-MIGRATION READY"
}

# Drops the page cache only: dentries and inodes stay (no FORGET of what the
# guest looked up).
drop_pages() {
  sync
  echo 1 >/proc/sys/vm/drop_caches
}

marker() {
  n=$((${ARG_wait:-600} * 4)) i=0
  until [ -e "$M/migrated" ]; do
    [ "$n" -gt 0 ] || fail "no marker $M/migrated from the host within ${ARG_wait:-600} s"
    n=$((n - 1))
    f=$((i % 8)).bin
    [ "$f" != 0.bin ] || drop_pages
    expect_eq "churn/$f md5" "$(md5sum <"$M/data/churn/$f" | cut -d' ' -f1)" "$(grep " $f\$" /tmp/churn.md5 | cut -d' ' -f1)"
    i=$((i + 1))
    sleep 0.25
  done
  value churn.reads "$i"
  echo "DAXFSD-MIGRATION CONTINUED ($(cat "$M/migrated"))"
}

page_cache() { (cd "$M/data/churn" && md5sum -c /tmp/churn.md5); }

fd3_rest() {
  # The page cache must not answer: the read has to reach the daemon.
  drop_pages
  rc=0
  cat <&3 >/tmp/read.rest 2>/tmp/read.err || rc=$?
  if [ "$rc" = 0 ] && [ "$(md5sum </tmp/read.rest | cut -d' ' -f1)" = "$(cat /tmp/read.tail.md5)" ]; then
    got=data
  elif [ "$rc" = 0 ]; then
    got=wrong-bytes
  elif grep -q 'Input/output error' /tmp/read.err; then
    got=eio
  else
    got=error
  fi
  value fd3 "$got"
  expect_eq "reading the rest of descriptor 3 (cat: $(cat /tmp/read.err))" "$got" "${ARG_fd3:-data}"
}

fd4_append() { echo after >&4; }

dir_handle() { expect_eq "readdir-fd 5" "$(readdir-fd 5 | sort)" "$(cat /tmp/sub.list)"; }

deep_path() {
  expect_eq "deep.txt inode" "$(stat -c %i "$M/a/b/c/d/e/f/deep.txt")" "$(cat /tmp/deep.ino)"
  expect_eq "deep.txt" "$(cat "$M/a/b/c/d/e/f/deep.txt")" "deep file"
}

new_file() {
  echo "created after migration" >new.txt
  drop_caches
  expect_eq "new.txt" "$(cat new.txt)" "created after migration"
}

# ls on purpose: a READDIR of the cwd's inode, which the destination got
# from the source.
# shellcheck disable=SC2012
cwd_list() { expect_eq "ls of the cwd" "$(ls | tr '\n' ' ')" "log.txt new.txt sub "; }

all_checks() { [ -z "$FAILED_STEPS" ] || fail "failed checks: $FAILED_STEPS"; }

FAILED_STEPS=
step prepared prepared
cd "$M/work" || fail "cd $M/work"
# `command`: a failed redirection must not end /init.
command exec 3<"$M/data/read.bin" 4>>log.txt 5<sub ||
  { echo "DAXFSD-STEP FAIL open: descriptors 3, 4, 5"; finish FAIL open; }
step state_built state_built
step marker marker
soft_step deep_path deep_path
soft_step page_cache page_cache
soft_step fd3_rest fd3_rest
soft_step fd4_append fd4_append
soft_step dir_handle dir_handle
soft_step new_file new_file
soft_step cwd_list cwd_list
exec 3<&- 4>&- 5<&-
cd /
step all_checks all_checks
