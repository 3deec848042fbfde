# Workload "basic" (guest side, busybox sh, sourced by /init with the share on
# $MNT): the everyday operations a Linux guest performs on a virtio-fs mount.
# basic.host.sh prepares the shared directory and checks the effects afterwards.
# shellcheck shell=sh
# ls on purpose: its readdir through the mount is what is tested.
# shellcheck disable=SC2012

read_host_file() {
  expect_eq "hello.txt" "$(cat "$MNT/hello.txt")" "hello from the host"
  (cd "$MNT" && md5sum -c host-data.md5)
  expect_eq "host-data.bin size" "$(stat -c %s "$MNT/host-data.bin")" 1048576
}

overwrite_in_place() {
  # "host\n" at offset 15 becomes "guest": same size, no truncation.
  printf guest | dd of="$MNT/hello.txt" bs=1 seek=15 conv=notrunc status=none
  # One zeroed 4 KiB block in the middle of the binary file.
  dd if=/dev/zero of="$MNT/host-data.bin" bs=4096 seek=16 count=1 conv=notrunc status=none
  drop_caches
  expect_eq "hello.txt" "$(cat "$MNT/hello.txt")" "hello from the guest"
  expect_eq "hello.txt size" "$(stat -c %s "$MNT/hello.txt")" 20
  expect_eq "host-data.bin size" "$(stat -c %s "$MNT/host-data.bin")" 1048576
  zero=$(head -c 4096 /dev/zero | md5sum | cut -d' ' -f1)
  block=$(dd if="$MNT/host-data.bin" bs=4096 skip=16 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
  expect_eq "zeroed block" "$block" "$zero"
  value host-data.bin.md5 "$(md5sum "$MNT/host-data.bin" | cut -d' ' -f1)"
}

write_8mib() {
  dd if=/dev/urandom of=/tmp/big.bin bs=1M count=8 status=none
  want=$(md5sum /tmp/big.bin | cut -d' ' -f1)
  cp /tmp/big.bin "$MNT/big.bin"
  drop_caches
  expect_eq "big.bin size" "$(stat -c %s "$MNT/big.bin")" 8388608
  expect_eq "big.bin md5" "$(md5sum "$MNT/big.bin" | cut -d' ' -f1)" "$want"
  value big.bin.md5 "$want"
}

make_dirs() {
  mkdir "$MNT/dir1" "$MNT/dir1/sub"
  [ -d "$MNT/dir1/sub" ] || fail "dir1/sub is not a directory"
  if mkdir "$MNT/dir1" 2>/dev/null; then fail "mkdir of an existing dir succeeded"; fi
}

rename_entries() {
  echo "renamed file" >"$MNT/dir1/before.txt"
  mv "$MNT/dir1/before.txt" "$MNT/dir1/sub/after.txt"
  [ ! -e "$MNT/dir1/before.txt" ] || fail "dir1/before.txt still there"
  expect_eq "sub/after.txt" "$(cat "$MNT/dir1/sub/after.txt")" "renamed file"
  # A directory, with its contents.
  mv "$MNT/dir1/sub" "$MNT/dir1/moved"
  [ ! -e "$MNT/dir1/sub" ] || fail "dir1/sub still there"
  expect_eq "moved/after.txt" "$(cat "$MNT/dir1/moved/after.txt")" "renamed file"
  # Over an existing file: replaces it.
  echo old >"$MNT/dir1/victim"
  echo new >"$MNT/dir1/newer"
  mv -f "$MNT/dir1/newer" "$MNT/dir1/victim"
  [ ! -e "$MNT/dir1/newer" ] || fail "dir1/newer still there"
  expect_eq "victim" "$(cat "$MNT/dir1/victim")" new
}

make_symlink() {
  ln -s ../hello.txt "$MNT/dir1/link"
  [ -L "$MNT/dir1/link" ] || fail "dir1/link is not a symlink"
  expect_eq "readlink dir1/link" "$(readlink "$MNT/dir1/link")" ../hello.txt
  expect_eq "cat dir1/link" "$(cat "$MNT/dir1/link")" "hello from the guest"
}

make_hard_link() {
  ln "$MNT/dir1/moved/after.txt" "$MNT/dir1/hard"
  expect_eq "after.txt nlink" "$(stat -c %h "$MNT/dir1/moved/after.txt")" 2
  expect_eq "hard nlink" "$(stat -c %h "$MNT/dir1/hard")" 2
  expect_eq "hard inode" "$(stat -c %i "$MNT/dir1/hard")" "$(stat -c %i "$MNT/dir1/moved/after.txt")"
  expect_eq "cat hard" "$(cat "$MNT/dir1/hard")" "renamed file"
}

change_modes() {
  chmod 640 "$MNT/dir1/moved/after.txt"
  chmod 750 "$MNT/dir1/moved"
  expect_eq "after.txt mode" "$(stat -c %a "$MNT/dir1/moved/after.txt")" 640
  expect_eq "hard mode" "$(stat -c %a "$MNT/dir1/hard")" 640
  expect_eq "moved mode" "$(stat -c %a "$MNT/dir1/moved")" 750
}

truncate_file() {
  cp /tmp/big.bin "$MNT/trunc.bin"
  truncate -s 1000000 "$MNT/trunc.bin"
  expect_eq "size after shrink" "$(stat -c %s "$MNT/trunc.bin")" 1000000
  truncate -s 3000000 "$MNT/trunc.bin"
  drop_caches
  expect_eq "size after grow" "$(stat -c %s "$MNT/trunc.bin")" 3000000
  expect_eq "kept head" \
    "$(head -c 1000000 "$MNT/trunc.bin" | md5sum | cut -d' ' -f1)" \
    "$(head -c 1000000 /tmp/big.bin | md5sum | cut -d' ' -f1)"
  expect_eq "zero tail" \
    "$(tail -c 2000000 "$MNT/trunc.bin" | md5sum | cut -d' ' -f1)" \
    "$(head -c 2000000 /dev/zero | md5sum | cut -d' ' -f1)"
}

readdir_1000() {
  expect_eq "ls -A many | wc -l" "$(ls -A "$MNT/many" | wc -l)" 1000
  expect_eq "find many -type f" "$(find "$MNT/many" -type f | wc -l)" 1000
  expect_eq "first entry" "$(ls "$MNT/many" | head -n 1)" f0000
  expect_eq "last entry" "$(ls "$MNT/many" | tail -n 1)" f0999
}

unlink_entries() {
  rm "$MNT/dir1/hard"
  [ ! -e "$MNT/dir1/hard" ] || fail "dir1/hard still there"
  expect_eq "after.txt nlink" "$(stat -c %h "$MNT/dir1/moved/after.txt")" 1
  rm "$MNT/many/f0500"
  [ ! -e "$MNT/many/f0500" ] || fail "many/f0500 still there"
  expect_eq "entries left" "$(ls -A "$MNT/many" | wc -l)" 999
  # An open file stays readable after its last name is gone.
  echo "still readable" >"$MNT/dir1/open-unlinked"
  exec 3<"$MNT/dir1/open-unlinked"
  rm "$MNT/dir1/open-unlinked"
  [ ! -e "$MNT/dir1/open-unlinked" ] || fail "dir1/open-unlinked still there"
  expect_eq "read after unlink" "$(cat <&3)" "still readable"
  exec 3<&-
}

remove_dirs() {
  mkdir "$MNT/dir1/empty"
  rmdir "$MNT/dir1/empty"
  [ ! -e "$MNT/dir1/empty" ] || fail "dir1/empty still there"
  if rmdir "$MNT/dir1/moved" 2>/dev/null; then fail "rmdir of a non-empty dir succeeded"; fi
  [ -d "$MNT/dir1/moved" ] || fail "dir1/moved is gone"
}

step read_host_file read_host_file
step overwrite_in_place overwrite_in_place
step write_8mib write_8mib
step mkdir make_dirs
step rename rename_entries
step symlink make_symlink
step hard_link make_hard_link
step chmod change_modes
step truncate truncate_file
step readdir_1000 readdir_1000
step unlink unlink_entries
step rmdir remove_dirs
