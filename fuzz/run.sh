#!/usr/bin/env bash
# Runs one fuzz target for a fixed time:
#   fuzz/run.sh [TARGET] [SECONDS]     default: dispatch 600
# Targets: dispatch (parse + dispatch over a scratch share and an in-process
# VMM), parse (the protocol crate alone). Installs cargo-fuzz into .cache,
# builds with AddressSanitizer on the stable toolchain (RUSTC_BOOTSTRAP=1
# lets cargo-fuzz pass its -Z flags), starts from the committed seeds plus
# whatever fuzz/corpus/TARGET kept from earlier runs, and exits non-zero on
# the first crash (saved under fuzz/artifacts/TARGET/). Needs root for the
# dispatch target's private tmpfs; without it the scratch share is a plain
# temp dir capped only per file. The whole run (build included) is bounded
# by SECONDS plus DAXFSD_FUZZ_BUILD_TIMEOUT (default 3600) seconds.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$fuzz")
# shellcheck source=SCRIPTDIR/../tests/lib/wait.sh
. "$repo/tests/lib/wait.sh"
target=${1:-dispatch}
seconds=${2:-600}
PATH=$("$fuzz/install-cargo-fuzz.sh"):$PATH
mkdir -p "$fuzz/corpus/$target"
cd "$repo"
limit=$((seconds + ${DAXFSD_FUZZ_BUILD_TIMEOUT:-3600}))
run_bounded "$limit" "building and fuzzing $target" \
  env RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" \
  "fuzz/corpus/$target" fuzz/seeds/dispatch -- \
  -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1
