# Workload "dax_inode" (guest side): mounted with dax=inode, the daemon decides
# per file (--inode-dax min-size=1M, FUSE_ATTR_DAX): the small file is served
# through the guest page cache, the large one through the DAX window, and the
# guest kernel reports its decision in statx (STATX_ATTR_DAX). Both read back
# correctly, through read(2) and through mmap. dax_inode.host.sh prepares the
# files and checks that the large file did use the window.
# shellcheck shell=sh

mounted_with_dax_inode() {
  grep " $MNT virtiofs " /proc/mounts | grep -q "dax=inode" || fail "$(grep " $MNT " /proc/mounts)"
}

small_file_bypasses_the_window() {
  expect_eq "small.txt STATX_ATTR_DAX" "$(statx-dax "$MNT/small.txt")" 0
  expect_eq "small.txt" "$(cat "$MNT/small.txt")" "a small file, below --inode-dax min-size"
}

large_file_uses_the_window() {
  expect_eq "large.bin STATX_ATTR_DAX" "$(statx-dax "$MNT/large.bin")" 1
  want=$(cat "$MNT/large.md5")
  expect_eq "large.bin md5" "$(md5sum "$MNT/large.bin" | cut -d' ' -f1)" "$want"
  expect_eq "large.bin mmap md5" "$(mmap-rw cat "$MNT/large.bin" | md5sum | cut -d' ' -f1)" "$want"
}

step mounted_with_dax_inode mounted_with_dax_inode
step small_file_bypasses_the_window small_file_bypasses_the_window
step large_file_uses_the_window large_file_uses_the_window
