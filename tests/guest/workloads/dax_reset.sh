# Workload "dax_reset" (guest side): the window across a device reset that
# ends the session without FUSE_DESTROY. Boot 1 maps files through the window
# and reboots with the share still mounted (reboot -f: a system reset, every
# device reset, no unmount); run-guest.sh --allow-reboot keeps QEMU running.
# Boot 2 (it finds boot1.done in the share) maps the same files again: the
# daemon must first empty the window of the old session's records, whatever
# the frontend did with them at the reset (QEMU drops them, as upstream QEMU
# does), then serve the new mappings with the right bytes.
# dax_reset.host.sh prepares the files and checks the daemon's metrics.
# shellcheck shell=sh

mounted_with_dax() {
  grep " $MNT virtiofs " /proc/mounts | grep -q dax || fail "$(grep " $MNT " /proc/mounts)"
}

read_through_window() {
  (cd "$MNT" && md5sum -c data.md5)
}

hold_and_reboot() {
  # A writable mapping too, dirtied and left mapped at the reset.
  mmap-rw write "$MNT/mapped.txt" 0 "BOOT1"
  echo 1 >"$MNT/boot1.done"
  sync
  value boot 1
  echo "DAXFSD-INFO rebooting with the share mounted"
  reboot -f
  sleep 30
  fail "reboot -f returned"
}

second_boot_reads() {
  drop_caches
  (cd "$MNT" && md5sum -c data.md5)
  expect_eq "mapped.txt after the reset" "$(cat "$MNT/mapped.txt")" "BOOT1_boot"
}

second_boot_writes() {
  mmap-rw write "$MNT/mapped.txt" 0 "BOOT2"
  drop_caches
  expect_eq "mapped.txt" "$(cat "$MNT/mapped.txt")" "BOOT2_boot"
  value boot 2
}

step mounted_with_dax mounted_with_dax
if [ -e "$MNT/boot1.done" ]; then
  step second_boot_reads second_boot_reads
  step second_boot_writes second_boot_writes
else
  step read_through_window read_through_window
  step hold_and_reboot hold_and_reboot
fi
