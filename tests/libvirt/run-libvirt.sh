#!/usr/bin/env bash
# Real-libvirt test: Debian's libvirt (9.0 on bookworm) starts the virtio-fs
# daemon named by <binary path=...> for a TCG guest, the guest runs a workload
# on the share, `virsh destroy` stops everything, and no daemon process and no
# socket may be left.
#
#   tests/libvirt/run-libvirt.sh [options]
#     --binary PATH       the daemon libvirt starts (default: the daxfsd
#                         binary, <repo>/target/debug/daxfsd if present, else
#                         /work/main/target/debug/daxfsd); upstream virtiofsd
#                         works too (tests/tools/install-virtiofsd.sh)
#     --cache MODE        <cache mode=...>: none | always (default always;
#                         libvirt 9.0 knows no other), or "" for no element
#     --thread-pool N     <thread_pool size=N/> (default 0), "" for none
#     --sandbox MODE      <sandbox mode=...>: namespace | chroot, "" for none
#                         (default "")
#     --xattr on|off      <binary xattr=...> (default: no attribute)
#     --workload NAME     guest workload from tests/guest/workloads (default basic)
#     --emulator PATH     QEMU binary (default /usr/bin/qemu-system-x86_64)
#     --timeout SECS      limit for the guest's result marker (default 600)
#     --dax SIZE          DAX through libvirt (docs/libvirt.md): libvirt
#                         starts daxfsd through a wrapper (<binary path=>)
#                         that adds --cache-size SIZE to libvirt's command
#                         line, and <qemu:override> sets the device's
#                         cache-size; needs a DAX-capable --emulator (the
#                         patched QEMU of tests/qemu/). The guest mounts
#                         dax=always; default workload dax
#     --keep              keep the work directory (logs, domain XML)
#     -h, --help
#   Environment: DAXFSD_CACHE (default <repo>/.cache) holds guest/vmlinuz
#   (tests/guest/setup.sh puts it there); the initramfs is built into the work
#   directory with tests/guest/build-initramfs.sh.
#
# How libvirt is run: libvirtd, as root, without systemd, in a private mount
# namespace (unshare) where /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/log/libvirt and /var/cache/libvirt are bind mounts of directories in
# the work directory: the system's libvirt configuration and state are never
# touched, and the domain and daemon logs are readable from outside. Its
# socket is in the work directory (libvirtd.conf unix_sock_dir) and virsh
# connects with qemu:///system?socket=... . qemu.conf: QEMU runs as root, no
# security driver, no cgroups, no private /dev namespace, stdio to files (no
# virtlogd). libvirt's packages are installed with apt-get if missing.
#
# Passes when: `virsh start` succeeds, the guest prints DAXFSD-RESULT PASS
# (the kernel command line has daxfsd.hold=1, so the guest then waits),
# `virsh destroy` succeeds, afterwards no process of the daemon's process
# group is left, its pidfile and the vhost-user socket are gone, and the
# workload's host-side checks pass. On failure it prints the command line
# libvirt used for the daemon (from the domain log) and the daemon's log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
cache_root=${DAXFSD_CACHE:-$repo/.cache}
binary=
cache_mode=always
thread_pool=0
sandbox=
xattr=
workload=basic
emulator=/usr/bin/qemu-system-x86_64
timeout_s=600
keep=0
dax=
workload_set=0
name=daxfsd-libvirt-test
tag=libvirtfs

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "run-libvirt: $*" >&2; exit 2; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case $1 in
    --binary) need_arg "$@"; binary=$2; shift 2 ;;
    --cache) need_arg "$@"; cache_mode=$2; shift 2 ;;
    --thread-pool) need_arg "$@"; thread_pool=$2; shift 2 ;;
    --sandbox) need_arg "$@"; sandbox=$2; shift 2 ;;
    --xattr) need_arg "$@"; xattr=$2; shift 2 ;;
    --workload) need_arg "$@"; workload=$2; workload_set=1; shift 2 ;;
    --dax) need_arg "$@"; dax=$2; shift 2 ;;
    --emulator) need_arg "$@"; emulator=$2; shift 2 ;;
    --timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

dax_bytes=
if [ -n "$dax" ]; then
  case $dax in
    *[kK]) dax_bytes=$((${dax%?} << 10)) ;;
    *[mM]) dax_bytes=$((${dax%?} << 20)) ;;
    *[gG]) dax_bytes=$((${dax%?} << 30)) ;;
    *) [[ $dax =~ ^[0-9]+$ ]] && dax_bytes=$dax ;;
  esac
  [[ ${dax_bytes:-} =~ ^[1-9][0-9]*$ ]] || die "--dax takes a size (K/M/G suffix), not '$dax'"
  [ "$workload_set" = 1 ] || workload=dax
fi
[ "$(id -u)" = 0 ] || die "must run as root (libvirt's QEMU driver runs virtiofs daemons only in system mode)"
if [ -z "$binary" ]; then
  if [ -x "$repo/target/debug/daxfsd" ]; then binary=$repo/target/debug/daxfsd
  else binary=/work/main/target/debug/daxfsd; fi
fi
[ -x "$binary" ] || die "no daemon binary at $binary (--binary)"
binary=$(realpath "$binary")
[ -x "$emulator" ] || die "no QEMU at $emulator (tests/guest/setup.sh installs one)"
kernel=$cache_root/guest/vmlinuz
[ -r "$kernel" ] || die "no guest kernel at $kernel (run tests/guest/setup.sh, or set DAXFSD_CACHE)"
[ -r "$repo/tests/guest/workloads/$workload.sh" ] || die "no workload '$workload' in tests/guest/workloads"
case $cache_mode in '' | none | always) ;; *) die "--cache: libvirt 9.0 knows none and always, not '$cache_mode'" ;; esac
case $sandbox in '' | namespace | chroot) ;; *) die "--sandbox: namespace or chroot, not '$sandbox'" ;; esac
case $xattr in '' | on | off) ;; *) die "--xattr: on or off, not '$xattr'" ;; esac
[[ $thread_pool =~ ^[0-9]*$ ]] || die "--thread-pool takes a number, not '$thread_pool'"
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout takes seconds, not '$timeout_s'"

# libvirt from Debian (the mirror is whatever this machine's apt uses).
if ! command -v virsh >/dev/null || ! command -v libvirtd >/dev/null ||
  [ ! -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ]; then
  echo "run-libvirt: installing libvirt (libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients)" >&2
  install_step "apt-get update" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive install_step "apt-get install libvirt" apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients >&2
fi
# libvirt's QEMU driver resolves its built-in default user and group
# (Debian: libvirt-qemu) before it reads qemu.conf; libvirt-daemon-system
# would create them, the minimal packages do not.
if ! getent group libvirt-qemu >/dev/null; then
  groupadd --system libvirt-qemu
  echo "run-libvirt: created the system group libvirt-qemu" >&2
fi
if ! getent passwd libvirt-qemu >/dev/null; then
  useradd --system --gid libvirt-qemu --no-create-home --home-dir /var/lib/libvirt \
    --shell /usr/sbin/nologin libvirt-qemu
  echo "run-libvirt: created the system user libvirt-qemu" >&2
fi
for prog in unshare perl gzip; do command -v "$prog" >/dev/null || die "$prog is needed"; done
# One privileged libvirt at a time: the QEMU driver's state would clash.
for d in libvirtd virtqemud; do
  if pgrep -x "$d" >/dev/null; then die "a $d is already running (pid $(pgrep -x "$d" | tr '\n' ' ')); stop it first"; fi
done

work=$(mktemp -d /tmp/run-libvirt.XXXXXX)
libvirtd_pid=
daemon_pgid=
# Every virsh call is bounded: a wedged libvirtd fails the run, not hangs it.
virsh() {
  timeout -k 10 "${DAXFSD_VIRSH_TIMEOUT:-120}" \
    virsh -q -c "qemu:///system?socket=$work/sock/libvirt-sock" "$@"
}

# group_members, group_gone, stop_group: tests/lib/wait.sh.

# The first of its arguments that exists (for globs that may match nothing).
first_existing() {
  local f
  for f in "$@"; do
    if [ -e "$f" ]; then echo "$f"; return 0; fi
  done
  return 0
}

cleanup() {
  local rc=$? pid
  set +e
  if [ -S "$work/sock/libvirt-sock" ] && virsh domstate "$name" 2>/dev/null | grep -q running; then
    virsh destroy "$name" >/dev/null 2>&1
  fi
  # A QEMU libvirt started and did not stop (its pidfile names it).
  for f in "$work"/run/qemu/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null)
    case $f in *-fs.pid) ;; *) [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null ;; esac
  done
  if [ -n "$daemon_pgid" ] && [ -n "$(group_members "$daemon_pgid")" ]; then
    kill -KILL -- "-$daemon_pgid" 2>/dev/null
  fi
  if [ -n "$libvirtd_pid" ]; then
    stop_group "$libvirtd_pid" 15
  fi
  if [ "$keep" = 1 ] || [ "$rc" != 0 ]; then
    echo "run-libvirt: work directory kept: $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "run-libvirt: FAIL: $*" >&2
  show_logs
  exit 1
}

# The command line libvirt ran the daemon with, as it logged it.
daemon_argv() {
  grep -h -- "--fd=" "$work"/log/qemu/"$name".log 2>/dev/null | tail -n 1
}

show_logs() {
  local f
  echo "--- daemon command line (from libvirt's domain log) ---" >&2
  daemon_argv >&2 || true
  for f in "$work"/log/qemu/"$name"-*virtiofsd.log; do
    [ -f "$f" ] || continue
    echo "--- $(basename "$f") (the daemon's stdout/stderr) ---" >&2
    tail -n 20 "$f" >&2
  done
  if [ -f "$work/log/qemu/$name.log" ]; then
    echo "--- $name.log (domain log) ---" >&2
    tail -n 15 "$work/log/qemu/$name.log" >&2
  fi
  if [ -f "$work/console.log" ]; then
    echo "--- guest console (last lines) ---" >&2
    tail -n 15 "$work/console.log" >&2
  fi
  if [ -f "$work/libvirtd.log" ]; then
    echo "--- libvirtd.log (errors) ---" >&2
    grep -i ' error ' "$work/libvirtd.log" | tail -n 10 >&2
  fi
}

# 1. Private libvirt configuration and state.
mkdir -p "$work"/{etc,run,lib,log,cache,sock,share,state}
chmod 0755 "$work"
cat >"$work/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$work/sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$work/libvirtd.log"
EOF
cat >"$work/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
# Mount points for the bind mounts (empty directories if missing).
for d in /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
  mkdir -p "$d"
done
# shellcheck disable=SC2016  # expanded by the inner sh, from its $1
setsid unshare --mount --propagation private -- sh -ec '
  w=$1
  mount --bind "$w/etc" /etc/libvirt
  mount --bind "$w/run" /run/libvirt
  mount --bind "$w/lib" /var/lib/libvirt
  mount --bind "$w/log" /var/log/libvirt
  mount --bind "$w/cache" /var/cache/libvirt
  exec libvirtd --config "$w/etc/libvirtd.conf" --pid-file "$w/libvirtd.pid"
' sh "$work" </dev/null >"$work/libvirtd.out" 2>&1 &
libvirtd_pid=$!
disown "$libvirtd_pid"   # stopped by process group in cleanup, no job message
wait_for_socket "$work/sock/libvirt-sock" 30 "$libvirtd_pid" ||
  { cat "$work/libvirtd.out" >&2; die "libvirtd did not start"; }
echo "run-libvirt: $(command virsh --version | sed 's/^/virsh /'), libvirtd pid $libvirtd_pid, work dir $work" >&2

# 2. Guest image and shared directory.
initrd=$work/initramfs.cpio.gz
DAXFSD_CACHE=$cache_root "$repo/tests/guest/build-initramfs.sh" "$initrd" >/dev/null
"$repo/tests/guest/workloads/$workload.host.sh" prepare "$work/share" "$work/state"

# 3. The domain. <acpi/> matters: without it libvirt 9.0 passes -no-acpi,
# which QEMU 10 no longer has.
binary_attrs=""
[ -n "$xattr" ] && binary_attrs=" xattr='$xattr'"
binary_children=""
[ -n "$cache_mode" ] && binary_children+="<cache mode='$cache_mode'/>"
[ -n "$sandbox" ] && binary_children+="<sandbox mode='$sandbox'/>"
[ -n "$thread_pool" ] && binary_children+="<thread_pool size='$thread_pool'/>"
fs_source="<binary path='$binary'$binary_attrs>$binary_children</binary>
      <source dir='$work/share'/>"
ns_attr=""
qemu_ns=""
mount_arg=""
if [ -n "$dax" ]; then
  # libvirt 9.0 cannot pass the daemon --cache-size: it starts a wrapper
  # that adds it to libvirt's own command line (--fd=N -o ...).
  wrapper=$work/daxfsd-dax
  printf '#!/bin/sh\nexec %q --cache-size %q --metrics-file %q "$@"\n' \
    "$binary" "$dax" "$work/state/metrics.prom" >"$wrapper"
  chmod 755 "$wrapper"
  echo "run-libvirt: DAX: libvirt starts $wrapper ($(basename "$binary") --cache-size $dax)" >&2
  fs_source="<binary path='$wrapper'$binary_attrs>$binary_children</binary>
      <source dir='$work/share'/>
      <alias name='ua-fs-dax'/>"
  ns_attr=" xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
  # -L: the patched QEMU's own data directory has no firmware.
  qemu_ns="<qemu:commandline>
    <qemu:arg value='-L'/><qemu:arg value='/usr/share/seabios'/>
    <qemu:arg value='-L'/><qemu:arg value='/usr/share/qemu'/>
  </qemu:commandline>
  <qemu:override>
    <qemu:device alias='ua-fs-dax'>
      <qemu:frontend>
        <qemu:property name='cache-size' type='unsigned' value='$dax_bytes'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>"
  mount_arg=" daxfsd.mount_opts=dax=always"
fi
cat >"$work/domain.xml" <<EOF
<domain type='qemu'$ns_attr>
  <name>$name</name>
  <memory unit='MiB'>512</memory>
  <vcpu>2</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$initrd</initrd>
    <cmdline>console=ttyS0 panic=-1 daxfsd.tag=$tag daxfsd.workload=$workload daxfsd.hold=1$mount_arg</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$emulator</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs' queue='1024'/>
      $fs_source
      <target dir='$tag'/>
    </filesystem>
    <serial type='file'>
      <source path='$work/console.log'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  $qemu_ns
</domain>
EOF
virsh define "$work/domain.xml" >/dev/null || fail "virsh define"
echo "run-libvirt: starting the domain with $(tr -s ' \n' ' ' <<<"$fs_source")" >&2
if ! virsh start "$name" >"$work/start.out" 2>&1; then
  cat "$work/start.out" >&2
  fail "virsh start (libvirt could not start the daemon or QEMU)"
fi
if [ -n "$dax" ]; then
  grep -o "cache-size[^,}]*" "$work/log/qemu/$name.log" | head -n 1 | sed 's/^/run-libvirt: QEMU device: /' >&2
fi
echo "run-libvirt: daemon command line: $(daemon_argv)" >&2
pidfile=$(first_existing "$work"/run/qemu/*-fs.pid)
[ -n "$pidfile" ] || fail "no daemon pidfile in /run/libvirt/qemu"
daemon_pid=$(cat "$pidfile")
# libvirt daemonizes the daemon (setsid, then fork: the daemon is in the
# session's process group without leading it) and stops it by that group.
daemon_pgid=$(stat=$(cat "/proc/$daemon_pid/stat" 2>/dev/null) && read -r _ _ pg _ <<<"${stat##*) }" && echo "$pg") ||
  fail "the daemon (pid $daemon_pid from $pidfile) is not running after virsh start"
socket=$(first_existing "$work"/lib/qemu/domain-*/*-fs.sock)
echo "run-libvirt: daemon pid $daemon_pid (process group $daemon_pgid: $(group_members "$daemon_pgid" | wc -l) processes), socket ${socket:-none}" >&2

# 4. The guest's result.
deadline=$((SECONDS + timeout_s))
while ! grep -q 'DAXFSD-RESULT' "$work/console.log" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then fail "no result marker from the guest within ${timeout_s}s"; fi
  if ! virsh domstate "$name" 2>/dev/null | grep -q running; then
    fail "the domain stopped before the guest's result marker ($(virsh domstate "$name" --reason 2>&1))"
  fi
  sleep 2
done
result=$(grep -m 1 -o 'DAXFSD-RESULT.*' "$work/console.log" | tr -d '\r')
echo "run-libvirt: guest: $result ($SECONDS s into the test)" >&2
members_before=$(group_members "$daemon_pgid" | wc -l)

# 5. virsh destroy, then nothing may be left.
virsh destroy "$name" >/dev/null || fail "virsh destroy"
wait_until 10 "the daemon's process group $daemon_pgid to exit after virsh destroy" \
  group_gone "$daemon_pgid" 2>/dev/null || true
left=$(group_members "$daemon_pgid" | tr '\n' ' ')
[ -z "$left" ] || fail "daemon processes left after virsh destroy: $left"
[ -z "$pidfile" ] || [ ! -e "$pidfile" ] || fail "daemon pidfile left: $pidfile"
[ -z "$socket" ] || [ ! -e "$socket" ] || fail "vhost-user socket left: $socket"
leftover_socks=$(find "$work/lib" -type s 2>/dev/null | tr '\n' ' ')
[ -z "$leftover_socks" ] || fail "sockets left in /var/lib/libvirt: $leftover_socks"
echo "run-libvirt: after virsh destroy: the daemon's $members_before process(es)${pidfile:+, its pidfile} and its socket are gone" >&2

[ "$result" = "DAXFSD-RESULT PASS" ] || fail "guest workload failed: $result"
"$repo/tests/guest/workloads/$workload.host.sh" verify "$work/share" "$work/state" "$work/console.log" ||
  fail "host checks of workload $workload"
virsh undefine "$name" >/dev/null || true
if [ -n "$dax" ]; then
  echo "run-libvirt: PASS ($(basename "$binary") with a $dax DAX window, QEMU $emulator through libvirt $(command virsh --version), workload $workload)"
else
  echo "run-libvirt: PASS ($(basename "$binary") started by libvirt $(command virsh --version), workload $workload)"
fi
