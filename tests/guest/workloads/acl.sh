# Workload "acl" (guest side), with --posix-acl=always --security-label=always
# (acl.args): the guest agreed POSIX ACLs, so it sends new files' modes
# unmasked and its umask apart, and the daemon creates under that umask
# unless the parent has a default ACL (acl.host.sh put one on open/ and
# named/). Every creation also carries a security context extension (none
# named, without an LSM in this guest), which the daemon must accept.
# shellcheck shell=sh

mode() { stat -c %a "$1"; }

umask_applies_without_a_default_acl() {
  umask 022
  mkdir "$MNT/plain/d"
  : >"$MNT/plain/f"
  mkfifo "$MNT/plain/p"
  expect_eq "plain/d" "$(mode "$MNT/plain/d")" 755
  expect_eq "plain/f" "$(mode "$MNT/plain/f")" 644
  expect_eq "plain/p" "$(mode "$MNT/plain/p")" 644
}

default_acl_replaces_the_umask() {
  umask 077
  mkdir "$MNT/open/d"
  : >"$MNT/open/f"
  expect_eq "open/d" "$(mode "$MNT/open/d")" 777
  expect_eq "open/f" "$(mode "$MNT/open/f")" 666
  # The extended default ACL: group bits from its mask, not the umask.
  mkdir "$MNT/named/d"
  expect_eq "named/d" "$(mode "$MNT/named/d")" 775
}

symlinks_and_renames_still_work() {
  ln -s d "$MNT/open/l"
  expect_eq "open/l" "$(readlink "$MNT/open/l")" d
  mv "$MNT/open/f" "$MNT/open/g"
  [ -f "$MNT/open/g" ] || fail "open/g missing after rename"
}

step umask_applies_without_a_default_acl umask_applies_without_a_default_acl
step default_acl_replaces_the_umask default_acl_replaces_the_umask
step symlinks_and_renames_still_work symlinks_and_renames_still_work
