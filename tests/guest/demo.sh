#!/usr/bin/env bash
# Boots the test guest against the daemon and shows the virtio-fs mount at
# work from inside the VM: ls -l, cat and df of the shared directory, then a
# file written by the guest, read back on the host.
#
#   tests/guest/demo.sh [run-guest.sh OPTIONS]
#
# Without --daemon/--daemon-bin it builds and uses target/debug/daxfsd; e.g.
#   tests/guest/demo.sh --daemon-bin .cache/virtiofsd/bin/virtiofsd
# Installs QEMU and the guest kernel first if they are missing (needs root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

"$here/setup.sh" >/dev/null
# shellcheck source=SCRIPTDIR/daemon-default.sh
. "$here/daemon-default.sh"
# The guest console streams live; keep only what the workload prints.
"$here/run-guest.sh" --workload demo --append quiet --console "$@" |
  sed -un 's/\r$//; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; /DAXFSD-INFO/,$ {/^\[ *[0-9.]*\]/d;p}'
