#!/usr/bin/env bash
# Runs every test of the project, in the order a failure is cheapest to see:
# formatting and lints, unit and harness tests (cargo test drives the real
# daemon over its socket), loom models of the window index, then real Linux
# guests under QEMU TCG. Installs what it needs (root on Debian bookworm).
# Exits non-zero on the first failure.
# Every step is bounded (the scripts bound their own waits; the cargo steps
# here get DAXFSD_CARGO_TIMEOUT seconds each, default 3600).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=SCRIPTDIR/lib/wait.sh
. "$repo/tests/lib/wait.sh"
limit=${DAXFSD_CARGO_TIMEOUT:-3600}

section() { printf '\n=== %s ===\n' "$*"; }

section "format and lints"
cargo fmt --all -- --check
run_bounded "$limit" "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings

section "unit and harness tests"
# The harness tests start target/debug/daxfsd; build it first.
run_bounded "$limit" "building daxfsd" cargo build --locked -p daxfsd
run_bounded "$limit" "cargo test --workspace" cargo test --workspace --locked

section "flag compatibility with virtiofsd 1.14 (tests/compat/virtiofsd-flags.tsv, both daemons, about 80 s)"
# The reference daemon is built once into the cache (cargo install, minutes).
virtiofsd_bin=$("$repo/tests/tools/install-virtiofsd.sh")
run_bounded 600 "the flag table" "$repo/tests/compat/run-flags.sh" \
  --daxfsd "$repo/target/debug/daxfsd" --virtiofsd "$virtiofsd_bin"

section "fuzz targets (compiled; the committed seeds replayed through the dispatcher)"
# A workspace of its own (libFuzzer); plain cargo builds the targets and runs
# the seed-replay test. fuzz/run.sh runs a target for real.
# (--all-targets only for check: a fuzz target run as a test would fuzz forever.)
fuzz_cargo() {
  run_bounded "$limit" "cargo $1 of the fuzz workspace" env CARGO_TARGET_DIR="$repo/target/fuzz" \
    cargo "$1" --manifest-path "$repo/fuzz/Cargo.toml" --locked "${@:2}"
}
fuzz_cargo check --all-targets
fuzz_cargo test

section "loom models of the window index"
"$repo/dax-window/loom.sh"

section "POSIX conformance (pjdfstest through the host /dev/fuse transport)"
# Builds pjdfstest once into .cache/ (a few minutes), then runs its 398 tests
# against daxfsd --mount-point; fails on any failure not known for both daemons.
"$repo/tests/conformance/run-fuse.sh"

section "real guest (QEMU TCG, stock QEMU, no DAX)"
# submounts: a tmpfs mounted inside the share is a filesystem of its own in
# the guest (--announce-submounts, the default). many_files: 30,000 files
# listed and stat'ed twice at --rlimit-nofile 4096 (issue 15). acl: --posix-acl and
# --security-label agreed with the guest (the umask under default ACLs).
DAXFSD_GUEST_WORKLOADS="basic many_files submounts acl" "$repo/tests/guest/run-all.sh" --daemon-bin "$repo/target/debug/daxfsd"

section "real guest: a read blocked on the host holds only its own pool thread (one request queue, --thread-pool-size 4)"
DAXFSD_GUEST_WORKLOADS=stopped_server \
  DAXFSD_GUEST_DAEMON_PASSES="--sandbox namespace --seccomp kill --num-request-queues 1 --thread-pool-size 4" \
  "$repo/tests/guest/run-all.sh" --daemon-bin "$repo/target/debug/daxfsd"

section "live migration between two QEMUs and two daxfsd (the guest's open files, directories and cwd carried over; an inode without a path under each --migration-on-error, and by file handle)"
# Each run: two TCG guests, QMP migrate with return-path, 10-20 s.
for run in "basic|" "unlinked|" "unlinked|--migration-on-error guest-error" \
  "unlinked|--migration-mode file-handles" "basic|--migration-verify-handles --migration-confirm-paths"; do
  "$repo/tests/guest/run-migration.sh" --daemon-bin "$repo/target/debug/daxfsd" \
    --scenario "${run%%|*}" --daemon-args "${run#*|}"
done

section "libvirt 9.0 starts daxfsd (--fd, -o, --thread-pool-size=0) for a TCG guest; virsh destroy leaves no process and no socket"
# Installs libvirt's packages with apt-get if missing; runs its own libvirtd
# in a private mount namespace (tests/libvirt/run-libvirt.sh).
run_bounded 1200 "the libvirt test" "$repo/tests/libvirt/run-libvirt.sh" \
  --binary "$repo/target/debug/daxfsd"

section "real guest with DAX (patched QEMU, dax=always and dax=inode, 8 MiB window)"
"$repo/tests/guest/run-dax.sh" --daemon-bin "$repo/target/debug/daxfsd"

section "libvirt 9.0 starts daxfsd with a DAX window (a <binary> wrapper adds --cache-size; <qemu:override> sets the patched QEMU's cache-size)"
# build-qemu.sh prints the cached patched QEMU (built by the step above).
run_bounded 1200 "the libvirt DAX test" "$repo/tests/libvirt/run-libvirt.sh" \
  --binary "$repo/target/debug/daxfsd" --dax 8M --emulator "$("$repo/tests/qemu/build-qemu.sh")"

section "real guest with DAX on upstream QEMU 11.1 (Debian sid's binary in a chroot; dax=inode served, dax=always refused at INIT)"
# Builds the sid chroot once into .cache/qemu-upstream (debootstrap, about 90 s).
"$repo/tests/guest/run-dax-upstream.sh" --daemon-bin "$repo/target/debug/daxfsd"

section "real programs on a Debian root filesystem over DAX (32 MiB window, 2 vCPUs; both protocols, dax=always and dax=inode)"
# Builds the bookworm tree once into .cache/rootfs (debootstrap, about 2 minutes).
"$repo/tests/guest/run-rootfs-all.sh" --daemon-bin "$repo/target/debug/daxfsd"

section "all tests passed"
