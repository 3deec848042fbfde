# Sourced by run-all.sh and demo.sh: when neither the command line ("$@") nor
# the environment names a daemon, builds daxfsd (cargo, debug profile) so the
# default <repo>/target/debug/daxfsd that run-guest.sh uses is current.
# shellcheck shell=bash

: "${repo:?set repo before sourcing daemon-default.sh}"
daemon_given=0
[ -n "${DAXFSD_DAEMON:-}${DAXFSD_DAEMON_BIN:-}" ] && daemon_given=1
for a in "$@"; do
  case $a in --daemon|--daemon-bin) daemon_given=1 ;; esac
done
if [ "$daemon_given" = 0 ]; then
  echo "building daxfsd (cargo build -p daxfsd)" >&2
  (cd "$repo" && cargo build -q -p daxfsd) >&2
fi
