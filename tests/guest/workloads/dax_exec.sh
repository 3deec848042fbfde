# Workload "dax_exec" (guest side): executes PROGS different static programs
# from the share, ROUNDS times over, through a window of a few 2 MiB ranges,
# so the guest's reclaim hands a range that held one program's code to the
# next. Every program must print its own line (bin/progN.want): a CPU
# emulator that kept translated code of the range's previous contents would
# run the wrong program, or crash. This is what broke a Debian root
# filesystem on DAX under TCG (docs/qemu-dax.md, "Code in the window").
# shellcheck shell=sh

# Keep in sync with dax_exec.host.sh.
PROGS=12
ROUNDS=4

run_programs() {
  grep " $MNT virtiofs " /proc/mounts | grep -q dax || fail "not mounted with dax"
  r=1
  while [ "$r" -le "$ROUNDS" ]; do
    i=1
    while [ "$i" -le "$PROGS" ]; do
      want=$(cat "$MNT/bin/prog$i.want")
      got=$("$MNT/bin/prog$i" 2>&1) || fail "round $r: prog$i exited $?: $got"
      [ "$got" = "$want" ] || fail "round $r: prog$i printed '$got', expected '$want'"
      i=$((i + 1))
    done
    r=$((r + 1))
  done
}

step run_programs run_programs
