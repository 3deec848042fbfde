#!/usr/bin/env bash
# Installs cargo-fuzz into the project cache (default <repo>/.cache/cargo-fuzz)
# if it is not there yet, and prints the directory to put on PATH.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=SCRIPTDIR/../tests/lib/wait.sh
. "$repo/tests/lib/wait.sh"
root=${DAXFSD_CACHE:-$repo/.cache}/cargo-fuzz
if [ ! -x "$root/bin/cargo-fuzz" ]; then
  CARGO_TARGET_DIR="$root/build" install_step "cargo install cargo-fuzz" \
    cargo install --locked --version 0.13.2 --root "$root" cargo-fuzz >&2
  rm -rf "$root/build"
fi
echo "$root/bin"
