# Workload "dax_truncate" (guest side): a file mapped through the DAX window
# shrinks on the host while the guest holds it mapped; the guest then touches
# the old range through the same mapping. Without the daemon's repair the VMM
# dies of SIGBUS on the first page past the new end (the run then times out
# or fails with QEMU gone); with it the pages past the end read zeros, the
# head still shows the file, and the guest keeps working. Needs dax=always
# and dax_truncate.host.sh (which truncates when the guest says it is ready).
# shellcheck shell=sh

# Keep in sync with dax_truncate.host.sh, which writes KEEP (the size after
# the truncation, 1049576 unless DAXFSD_TRUNCATE_KEEP says otherwise) to the
# file `keep` in the share.
LEN=4194304
KEEP=$(cat "$MNT/keep" 2>/dev/null || echo 1049576)

mounted_with_dax() {
  grep " $MNT virtiofs " /proc/mounts | grep -q dax || fail "$(grep " $MNT " /proc/mounts)"
}

touch_across_the_truncation() {
  # Prints "head SAME zero-pages N data-pages 0 sigbus-pages N"; fails on
  # changed head bytes or data past the end. A VMM that dies prints nothing.
  out=$(mmap-truncate "$MNT/victim.bin" "$LEN" "$KEEP" "$MNT/ready" "$MNT/truncated")
  echo "$out"
  case $out in
    "head SAME "*) ;;
    *) fail "mmap-truncate: $out" ;;
  esac
  value touch.zero-pages "$(echo "$out" | sed 's/.*zero-pages \([0-9]*\).*/\1/')"
  value touch.sigbus-pages "$(echo "$out" | sed 's/.*sigbus-pages \([0-9]*\).*/\1/')"
}

sees_the_new_size() {
  # Past the attribute timeout the guest revalidates and sees the host's size.
  sleep 2
  expect_eq "victim.bin size" "$(stat -c %s "$MNT/victim.bin")" "$KEEP"
  drop_caches
  value victim.md5 "$(md5sum "$MNT/victim.bin" | cut -d' ' -f1)"
}

keeps_working() {
  dd if=/dev/urandom of=/tmp/after.bin bs=64k count=40 status=none
  want=$(md5sum /tmp/after.bin | cut -d' ' -f1)
  cp /tmp/after.bin "$MNT/after.bin"
  drop_caches
  expect_eq "after.bin md5" "$(md5sum "$MNT/after.bin" | cut -d' ' -f1)" "$want"
  expect_eq "mmap read of after.bin" "$(mmap-rw cat "$MNT/after.bin" | md5sum | cut -d' ' -f1)" "$want"
  value after.md5 "$want"
}

step mounted_with_dax mounted_with_dax
step touch_across_the_truncation touch_across_the_truncation
step sees_the_new_size sees_the_new_size
step keeps_working keeps_working
