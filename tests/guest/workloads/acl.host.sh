#!/usr/bin/env bash
# Workload "acl", host side (see acl.sh): prepare gives open/ a minimal
# default ACL granting everyone everything and named/ an extended one (a
# named user, a mask); verify checks the modes the guest saw on the host and
# that the new directories inherited the default ACLs. The ACLs are written
# as system.posix_acl_default values (python3: no setfacl needed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

# set_default_acl DIR TAG:PERM:ID...  (ID -1 for the *_OBJ, MASK, OTHER tags)
set_default_acl() {
  python3 - "$@" <<'PY'
import os, struct, sys
entries = [tuple(int(x, 0) for x in e.split(":")) for e in sys.argv[2:]]
value = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, id_ & 0xFFFFFFFF) for tag, perm, id_ in entries)
os.setxattr(sys.argv[1], "system.posix_acl_default", value)
PY
}

has_default_acl() {
  python3 -c 'import os, sys; os.getxattr(sys.argv[1], "system.posix_acl_default")' "$1" \
    || { echo "  $1 has no default ACL" >&2; return 1; }
}

prepare() {
  local shared=$1
  mkdir "$shared/plain" "$shared/open" "$shared/named"
  # USER_OBJ 0x01, USER 0x02, GROUP_OBJ 0x04, MASK 0x10, OTHER 0x20.
  set_default_acl "$shared/open" 0x01:7:-1 0x04:7:-1 0x20:7:-1
  set_default_acl "$shared/named" 0x01:7:-1 0x02:7:1234 0x04:5:-1 0x10:7:-1 0x20:5:-1
}

verify() {
  local shared=$1
  check plain.d eq "plain/d mode" "$(stat -c %a "$shared/plain/d")" 755
  check plain.f eq "plain/f mode" "$(stat -c %a "$shared/plain/f")" 644
  check open.d eq "open/d mode" "$(stat -c %a "$shared/open/d")" 777
  check open.g eq "open/g mode" "$(stat -c %a "$shared/open/g")" 666
  check named.d eq "named/d mode" "$(stat -c %a "$shared/named/d")" 775
  check open.d.inherited has_default_acl "$shared/open/d"
  check named.d.inherited has_default_acl "$shared/named/d"
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
