#!/usr/bin/env bash
# Workload "dax_exec", host side (see dax_exec.sh): builds PROGS small static
# programs whose code differs (each prints its own number, computed from an
# immediate operand in main), so that a guest executing one of them from a
# window range that held another sees which one it ran. The daemon must run
# with --metrics-file {state}/metrics.prom.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/../host-checks.sh
. "$here/../host-checks.sh"

# Keep in sync with dax_exec.sh.
PROGS=12

prepare() {
  local shared=$1 state=$2 i
  mkdir -p "$shared/bin"
  for i in $(seq 1 "$PROGS"); do
    cat >"$state/prog$i.c" <<C
#include <stdio.h>
/* The number is an immediate in main's code: the bytes at the same file
 * offset differ from one program to the next. */
__attribute__((noinline)) static unsigned mix(unsigned x) { return x * 2654435761u + $i; }
int main(void) { printf("prog $i %u\n", mix($i * 7919u)); return 0; }
C
    gcc -static -O2 -o "$shared/bin/prog$i" "$state/prog$i.c"
    # Zero-padded to a whole number of 4 KiB pages (harmless after the ELF
    # data): a frontend that cannot map a file's partial last page (QEMU
    # 11.1) then still gets them through the window under dax=inode.
    truncate -s %4096 "$shared/bin/prog$i"
    "$shared/bin/prog$i" >"$shared/bin/prog$i.want"
  done
}

verify() {
  local metrics=$2/metrics.prom
  check metrics.present test -s "$metrics"
  check metrics.setups test "$(metric "$metrics" dax_setupmapping_total)" -gt 0
  check metrics.removes test "$(metric "$metrics" dax_removed_mappings_total)" -gt 0
  check metrics.no-refusals eq "DAX refusals" "$(metric "$metrics" dax_refusals_total)" 0
  report_metrics dax_exec "$metrics" dax_setupmapping_total dax_removed_mappings_total \
    dax_thrash_total
  checks_done
}

case ${1:-} in
  prepare) prepare "$2" "$3" ;;
  verify) verify "$2" "$3" "$4" ;;
  *) echo "usage: $0 prepare SHARED STATE | verify SHARED STATE LOG" >&2; exit 2 ;;
esac
