# shellcheck shell=bash
# Command-line helpers for the test scripts (run-guest.sh, run-migration.sh):
# source this file after `set -euo pipefail`. Messages name the script.

# usage: prints the script's header comment (line 2 up to `set -euo`).
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

# die MESSAGE: a usage or setup error; exit 2.
die() { echo "$(basename "$0" .sh): $*" >&2; exit 2; }

# need_arg OPTION "$@": OPTION has a value after it.
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }

# work_dir DIR NAME: prints DIR, created if needed (it must be empty), or
# with DIR empty a new /tmp/daxfsd-NAME.XXXXXX; short, as a unix socket path
# inside it must fit in 108 bytes.
work_dir() {
  if [ -z "$1" ]; then
    mktemp -d "/tmp/daxfsd-$2.XXXXXX"
  else
    mkdir -p "$1"
    [ -z "$(ls -A "$1")" ] || die "work dir $1 is not empty"
    echo "$1"
  fi
}
