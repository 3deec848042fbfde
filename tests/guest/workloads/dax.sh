# Workload "dax" (guest side): file I/O through the DAX window. Mounted with
# dax=always on a QEMU that has a window (tests/qemu/); the daemon runs with
# a small --cache-size so the guest must reclaim ranges (REMOVEMAPPING).
# dax.host.sh prepares the files and checks the daemon's metrics afterwards.
# shellcheck shell=sh

mounted_with_dax() {
  grep " $MNT virtiofs " /proc/mounts | grep -q dax || fail "$(grep " $MNT " /proc/mounts)"
}

read_host_file() {
  expect_eq "hello.txt" "$(cat "$MNT/hello.txt")" "hello from the host"
  (cd "$MNT" && md5sum -c data.md5)
}

overwrite_rdwr() {
  # O_RDWR open (<>), write at offset 0, same size.
  printf 'HELLO' 1<>"$MNT/hello.txt"
  drop_caches
  expect_eq "hello.txt" "$(cat "$MNT/hello.txt")" "HELLO from the host"
}

overwrite_wronly() {
  # O_WRONLY open (dd without truncation), at offset 6.
  printf 'FROM' | dd of="$MNT/hello.txt" bs=1 seek=6 conv=notrunc status=none
  drop_caches
  expect_eq "hello.txt" "$(cat "$MNT/hello.txt")" "HELLO FROM the host"
}

mmap_read_write() {
  want=$(md5sum "$MNT/data.bin" | cut -d' ' -f1)
  expect_eq "mmap read md5" "$(mmap-rw cat "$MNT/data.bin" | md5sum | cut -d' ' -f1)" "$want"
  mmap-rw write "$MNT/mapped.txt" 4 "MMAP"
  drop_caches
  expect_eq "mapped.txt" "$(cat "$MNT/mapped.txt")" "0123MMAP89"
}

write_8mib() {
  dd if=/dev/urandom of=/tmp/big.bin bs=1M count=8 status=none
  want=$(md5sum /tmp/big.bin | cut -d' ' -f1)
  cp /tmp/big.bin "$MNT/big.bin"
  drop_caches
  expect_eq "big.bin md5" "$(md5sum "$MNT/big.bin" | cut -d' ' -f1)" "$want"
  value big.bin.md5 "$want"
}

read_64mib_twice() {
  # Eight times the window: the guest reclaims ranges as it goes.
  want=$(cat "$MNT/large.md5")
  expect_eq "large.bin md5, pass 1" "$(md5sum "$MNT/large.bin" | cut -d' ' -f1)" "$want"
  drop_caches
  expect_eq "large.bin md5, pass 2" "$(md5sum "$MNT/large.bin" | cut -d' ' -f1)" "$want"
}

step mounted_with_dax mounted_with_dax
step read_host_file read_host_file
step overwrite_rdwr overwrite_rdwr
step overwrite_wronly overwrite_wronly
step mmap_read_write mmap_read_write
step write_8mib write_8mib
step read_64mib_twice read_64mib_twice
