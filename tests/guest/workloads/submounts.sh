# Workload "submounts" (guest side): submounts.host.sh mounted a tmpfs on
# sub/ inside the share. With --announce-submounts (daxfsd's default, as
# virtiofsd's) the guest sees sub/ as a filesystem of its own: another
# device number than the share's root, and a mount of its own in
# /proc/mounts; the tmpfs's file reads back.
# shellcheck shell=sh

sub_is_its_own_filesystem() {
  # stat(2) of the mount point itself does not trigger the automount (it
  # acts as AT_NO_AUTOMOUNT); a path through it does.
  expect_eq "sub/marker" "$(cat "$MNT/sub/marker")" "on the tmpfs"
  root_dev=$(stat -c %d "$MNT/.")
  sub_dev=$(stat -c %d "$MNT/sub/.")
  value root.dev "$root_dev"
  value sub.dev "$sub_dev"
  [ "$root_dev" != "$sub_dev" ] || fail "sub/ has the share's device $root_dev"
  grep -q " $MNT/sub virtiofs " /proc/mounts || fail "no submount: $(grep virtiofs /proc/mounts)"
}

plain_dir_is_not() {
  expect_eq "plain/ device" "$(stat -c %d "$MNT/plain/.")" "$(stat -c %d "$MNT/.")"
}

write_into_the_submount() {
  echo "from the guest" >"$MNT/sub/written"
  sync
}

step sub_is_its_own_filesystem sub_is_its_own_filesystem
step plain_dir_is_not plain_dir_is_not
step write_into_the_submount write_into_the_submount
