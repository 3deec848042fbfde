#!/usr/bin/env bash
# Runs the loom models of the window index (and lints the loom build), in a
# target directory of their own so the `--cfg loom` build does not invalidate
# the normal one. LOOM_MAX_PREEMPTIONS (default 3 inside the models) widens
# the search; 4 takes about 4.5 minutes on 2 cores. DAXFSD_LOOM_TIMEOUT
# (seconds, default 3600) bounds the model run, build included.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=SCRIPTDIR/../tests/lib/wait.sh
. tests/lib/wait.sh
export RUSTFLAGS="--cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
cargo clippy -p dax-window --all-targets --locked -- -D warnings
run_bounded "${DAXFSD_LOOM_TIMEOUT:-3600}" "the loom models" \
  cargo test -p dax-window --release --locked --test loom_models
