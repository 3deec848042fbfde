# Workload "bench_read" (guest side): 4 KiB psync reads of a 64 MiB file,
# a cold pass (nothing cached in the guest, nothing mapped) and a warm pass
# right after. Publishes each pass's time for tests/guest/bench-guest.sh.
# shellcheck shell=sh

bench_pass() {
  out=$(pread-bench "$MNT/bench.bin" 4096)
  echo "$out"
  bytes=$(echo "$out" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
  expect_eq "bytes read" "$bytes" 67108864
  value "bench.$1.ns" "$(echo "$out" | sed -n 's/.*ns=\([0-9]*\).*/\1/p')"
}

step cold bench_pass cold
step warm bench_pass warm
