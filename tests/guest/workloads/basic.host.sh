#!/usr/bin/env bash
# Workload "basic", host side.
#   basic.host.sh prepare SHARED STATE      fill the shared dir before boot
#   basic.host.sh verify SHARED STATE LOG   check what the guest did
# STATE is a private scratch dir (not shared with the guest); LOG is the
# guest's serial console log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

prepare() {
  local shared=$1 state=$2 i
  printf 'hello from the host\n' >"$shared/hello.txt"
  head -c 1048576 /dev/urandom >"$shared/host-data.bin"
  (cd "$shared" && md5sum host-data.bin >host-data.md5)
  cp "$shared/host-data.bin" "$state/host-data.orig"
  mkdir "$shared/many"
  for i in $(seq -f %04g 0 999); do : >"$shared/many/f$i"; done
}

verify() {
  local shared=$1 state=$2 log=$3 want big

  check hello.txt eq "hello.txt" "$(cat "$shared/hello.txt")" "hello from the guest"

  cp "$state/host-data.orig" "$state/host-data.want"
  dd if=/dev/zero of="$state/host-data.want" bs=4096 seek=16 count=1 conv=notrunc status=none
  want=$(md5_of "$state/host-data.want")
  check host-data.bin eq "host-data.bin md5" "$(md5_of "$shared/host-data.bin")" "$want"
  check host-data.guest-md5 eq "guest's host-data.bin md5" "$(guest_value "$log" host-data.bin.md5)" "$want"

  big=$(guest_value "$log" big.bin.md5)
  check big.bin.reported eq "guest published big.bin md5" "$([ -n "$big" ] && echo yes)" yes
  check big.bin.size eq "big.bin size" "$(stat -c %s "$shared/big.bin")" 8388608
  check big.bin.md5 eq "big.bin md5" "$(md5_of "$shared/big.bin")" "$big"

  check rename.file eq "dir1/moved/after.txt" "$(cat "$shared/dir1/moved/after.txt")" "renamed file"
  check rename.sources-gone absent "$shared/dir1/before.txt" "$shared/dir1/sub" "$shared/dir1/newer"
  check rename.replace eq "dir1/victim" "$(cat "$shared/dir1/victim")" new

  check symlink.is-link test -L "$shared/dir1/link"
  check symlink.target eq "dir1/link target" "$(readlink "$shared/dir1/link")" ../hello.txt

  check hard_link.removed absent "$shared/dir1/hard"
  check hard_link.nlink eq "after.txt nlink" "$(stat -c %h "$shared/dir1/moved/after.txt")" 1

  check chmod.file eq "after.txt mode" "$(stat -c %a "$shared/dir1/moved/after.txt")" 640
  check chmod.dir eq "dir1/moved mode" "$(stat -c %a "$shared/dir1/moved")" 750

  check truncate.size eq "trunc.bin size" "$(stat -c %s "$shared/trunc.bin")" 3000000
  check truncate.head eq "trunc.bin head md5" \
    "$(head -c 1000000 "$shared/trunc.bin" | md5sum | cut -d' ' -f1)" \
    "$(head -c 1000000 "$shared/big.bin" | md5sum | cut -d' ' -f1)"
  check truncate.zero-tail cmp -s -n 2000000 <(tail -c 2000000 "$shared/trunc.bin") /dev/zero

  check unlink.many eq "entries in many/" "$(find "$shared/many" -mindepth 1 | wc -l)" 999
  check unlink.gone absent "$shared/many/f0500" "$shared/dir1/open-unlinked"
  check unlink.kept test -e "$shared/many/f0999"

  check rmdir.gone absent "$shared/dir1/empty"

  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
