#!/usr/bin/env bash
# Installs pjdfstest (the Rust rewrite, crates.io 0.2.2) into the project cache
# (default: <repo>/.cache/pjdfstest) if it is not there yet, and prints the
# binary's path. The guest runs need a binary without shared libraries; the
# build links the C runtime statically (target-feature=+crt-static on the
# gnu target: a static-pie that `ldd` lists without any "=>" library).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
cache=${DAXFSD_CACHE:-$repo/.cache}
root=$cache/pjdfstest
bin=$root/bin/pjdfstest
version=0.2.2
if [ ! -x "$bin" ]; then
  # Its own target dir: the workspace's target/ is left alone.
  RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TARGET_DIR="$root/build" \
    install_step "cargo install pjdfstest" cargo install --locked --version "$version" --root "$root" \
    --target x86_64-unknown-linux-gnu pjdfstest >&2
  rm -rf "$root/build"
fi
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "install-pjdfstest: $bin is dynamically linked; the guest cannot run it" >&2
  exit 1
fi
echo "$bin"
