#!/usr/bin/env bash
# Workload "demo", host side: a few files to look at, and afterwards the file
# the guest wrote, as the host sees it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

case ${1:-} in
  prepare)
    shared=$2
    printf 'hello from the host (%s)\n' "$(hostname)" >"$shared/hello.txt"
    mkdir "$shared/photos"
    head -c 3000000 /dev/urandom >"$shared/photos/big.jpg"
    ln -s hello.txt "$shared/greeting"
    ;;
  verify)
    shared=$2
    echo "host\$ cat $shared/from-guest.txt"
    cat "$shared/from-guest.txt"
    check from-guest.txt grep -q "written inside the guest" "$shared/from-guest.txt"
    checks_done
    ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
