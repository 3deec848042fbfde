#!/usr/bin/env bash
# Installs alioth (crate alioth-cli) into the project cache (default:
# <repo>/.cache/alioth) if it is not there yet, and prints the binary's path.
# Its `alioth vu fs` back-end speaks the legacy virtio-fs DAX protocol
# (FS_MAP/FS_UNMAP on backend request ids 6/7): the reference peer for the
# patched QEMU's legacy path. Used by tests only.
#
#   alioth vu --socket SOCK fs --param tag=TAG,path=DIR,dax_window=BYTES
#
# dax_window must equal the QEMU device's cache-size. Env: DAXFSD_CACHE.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
cache=${DAXFSD_CACHE:-$repo/.cache}
root=$cache/alioth
version=0.12.0
bin=$root/bin/alioth
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "install-alioth: building alioth-cli $version (a few minutes)" >&2
  install_step "cargo install alioth-cli" \
    cargo install --locked --root "$root" --version "$version" alioth-cli >&2
fi
echo "$bin"
