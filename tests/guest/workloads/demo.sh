# Workload "demo" (guest side): shows the shared directory from inside the VM
# and leaves a file for the host to find. Run it with tests/guest/demo.sh.
# shellcheck shell=sh

show() {
  echo "guest\$ $*"
  "$@"
}

look_around() {
  show uname -r
  show grep virtiofs /proc/mounts
  show ls -l "$MNT"
  show cat "$MNT/hello.txt"
  show df -h "$MNT"
}

write_back() {
  echo "written inside the guest (kernel $(uname -r))" >"$MNT/from-guest.txt"
  show ls -l "$MNT/from-guest.txt"
}

step look_around look_around
step write_back write_back
