# Workload "dax_parallel" (guest side): many processes on two vCPUs (two
# request queues) read, write and mmap eight files whose sum is six times the
# DAX window, so the guest's reclaim removes ranges while other processes
# fault them back in, and the daemon's two queue workers map and unmap the
# same slots concurrently. This is the load under which Linux's own DAX entry
# locking lost wakeups (parallel invalidation of one entry, 2021): a lost
# wakeup here hangs a job and the run times out. Each job checks what it
# reads; dax_parallel.host.sh checks the files and the daemon's counters.
#
# Writes through shared mappings happen after the parallel phase, one file
# at a time: with them inside it, the 6.12 guest's own reclaim sometimes fails
# with EBUSY (read(2) returns the error) after a writeback of a dirty window
# page (close, msync) races the reclaim of its range; no FUSE request fails
# then. See docs/qemu-dax.md, "Limits to know".
# shellcheck shell=sh

# Keep in sync with dax_parallel.host.sh.
JOBS=8
ROUNDS=3
HEAD=4194304
STAMP_AT=5242880
MMAP_STAMP_AT=5767168

mounted_with_dax() {
  grep " $MNT virtiofs " /proc/mounts | grep -q dax || fail "$(grep " $MNT " /proc/mounts)"
}

# job I: ROUNDS times, check the head of fI through read(2) and through mmap,
# write its first MiB back in place and stamp the round with write(2) (DAX
# writes: a read-only mapping of the range is upgraded).
job() {
  i=$1
  want=$(cat "$MNT/f$i.head.md5")
  dd if="$MNT/f$i" of="/tmp/f$i.mib" bs=65536 count=16 status=none
  r=1
  while [ "$r" -le "$ROUNDS" ]; do
    got=$(head -c "$HEAD" "$MNT/f$i" | md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "job $i round $r: read md5 $got, expected $want"; return 1; }
    got=$(mmap-rw cat "$MNT/f$i" | head -c "$HEAD" | md5sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "job $i round $r: mmap md5 $got, expected $want"; return 1; }
    dd if="/tmp/f$i.mib" of="$MNT/f$i" bs=65536 conv=notrunc status=none || return 1
    printf 'job%s-round%s' "$i" "$r" |
      dd of="$MNT/f$i" bs=1 seek="$STAMP_AT" conv=notrunc status=none || return 1
    r=$((r + 1))
  done
}

parallel_jobs() {
  i=0
  while [ "$i" -lt "$JOBS" ]; do
    # In an `if` condition set -e is off, so a failing job still leaves its
    # status (job checks its own commands).
    (if job "$i" >"/tmp/job$i.out" 2>&1; then echo 0; else echo 1; fi >"/tmp/job$i.rc") &
    i=$((i + 1))
  done
  wait # bounded by the host's QEMU timeout (run-guest.sh --timeout)
  i=0
  while [ "$i" -lt "$JOBS" ]; do
    rc=$(cat "/tmp/job$i.rc" 2>/dev/null || echo missing)
    [ "$rc" = 0 ] || fail "job $i exited $rc: $(cat "/tmp/job$i.out")"
    i=$((i + 1))
  done
}

mmap_stamps() {
  i=0
  while [ "$i" -lt "$JOBS" ]; do
    mmap-rw write "$MNT/f$i" "$MMAP_STAMP_AT" "mmap$i"
    i=$((i + 1))
  done
}

stamps_visible() {
  drop_caches
  i=0
  while [ "$i" -lt "$JOBS" ]; do
    expect_eq "f$i stamp" "$(dd if="$MNT/f$i" bs=1 skip="$STAMP_AT" count=11 status=none)" "job$i-round$ROUNDS"
    expect_eq "f$i mmap stamp" "$(dd if="$MNT/f$i" bs=1 skip="$MMAP_STAMP_AT" count=5 status=none)" "mmap$i"
    i=$((i + 1))
  done
}

step mounted_with_dax mounted_with_dax
step parallel_jobs parallel_jobs
step mmap_stamps mmap_stamps
step stamps_visible stamps_visible
