#!/usr/bin/env bash
# Flag-compatibility test: runs daxfsd (and upstream virtiofsd, when found)
# with every row of tests/compat/virtiofsd-flags.tsv and checks whether each
# accepts or refuses the command line as the table expects.
#
#   tests/compat/run-flags.sh [options]
#     --daxfsd PATH     daxfsd binary (default: <repo>/target/debug/daxfsd if
#                       present, else /work/main/target/debug/daxfsd)
#     --virtiofsd PATH  upstream virtiofsd 1.14 (default: the one
#                       tests/tools/install-virtiofsd.sh put in the cache, if
#                       there; it is never built from here)
#     --no-virtiofsd    do not run virtiofsd
#     --table FILE      default: tests/compat/virtiofsd-flags.tsv
#     --grace SECS      the longest a daemon may take to reach accept() before
#                       it counts as accepting anyway (default 10)
#     --jobs N          rows run at once (default 6; the daemons mostly wait)
#     --filter REGEX    only rows whose argv matches REGEX (grep -E)
#     --pending REGEX   rows whose argv matches REGEX are work under way
#                       elsewhere: a daxfsd mismatch there is reported as
#                       PENDING and does not fail the run (virtiofsd's column
#                       is still checked)
#     --current         report how far daxfsd is from the target and exit 0
#     --write-measured FILE
#                       also write the table to FILE with the virtiofsd
#                       column replaced by what this run measured (to
#                       re-measure after a virtiofsd upgrade; no --filter)
#     -v, --verbose     print every row, and the stderr of mismatching runs
#     -h, --help
#
# Exit status (default mode): 0 when daxfsd matches the table's `daxfsd`
# column on every row and virtiofsd (if run) its `virtiofsd` column; 1 on
# any mismatch; 2 on a usage or environment error.
#
# Table format (TAB-separated; lines starting with # and blank lines are
# skipped; the first other line is the header `argv virtiofsd daxfsd note`):
#   argv       the arguments after the program name, as one shell-quoted
#              string; placeholders @DIR@ (an empty shared directory),
#              @SOCK@ (a socket path in a fresh directory), @FD@ (3, a
#              listening Unix socket the daemon inherits), @TMP@ (the run's
#              private directory) are replaced first
#   virtiofsd  accept | refuse, as measured with virtiofsd 1.14
#   daxfsd     accept | refuse, the target for daxfsd
#   note       free text
#
# Decision procedure (the same for both daemons, for every row):
#   1. A fresh private directory T holds share/ (@DIR@), the socket path
#      T/vhost.sock (@SOCK@, not created beforehand) and a listening Unix
#      socket bound at T/fd.sock that the daemon inherits as descriptor 3
#      (@FD@); the daemon runs with T as its working directory, standard
#      input from /dev/null, in a new session (setsid) so that it and every
#      process it forks form one process group.
#   2. The run is polled every 0.05 s, for at most --grace seconds:
#        - the daemon exits with status 0            -> accept
#          (--help, --version, --print-capabilities)
#        - the daemon exits with any other status    -> refuse
#          (clap's usage errors exit 2, virtiofsd's later checks exit 1)
#        - a thread of a process of its group waits in accept(2) (read
#          from /proc/PID/task/TID/syscall)          -> accept
#          (it got past parsing and start-up checks and waits for a
#          frontend on its socket: the readiness signal)
#        - it is still running after --grace seconds -> accept
#          (a daemon that waits elsewhere; a fallback, slow by design)
#   3. The process group is then stopped (SIGTERM, up to 3 s, then SIGKILL)
#      and the run fails with an error if any process of the group is left.
# So "accept" means the daemon would serve with this command line, and
# "refuse" that it stopped with an error (for a flag it does not know, a
# value it rejects, or a combination it rejects) before serving.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
table=$here/virtiofsd-flags.tsv
daxfsd=
virtiofsd=
use_virtiofsd=1
grace=10
jobs=6
filter=
pending=
current=0
verbose=0
measured_out=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "run-flags: $*" >&2; exit 2; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case $1 in
    --daxfsd) need_arg "$@"; daxfsd=$2; shift 2 ;;
    --virtiofsd) need_arg "$@"; virtiofsd=$2; shift 2 ;;
    --no-virtiofsd) use_virtiofsd=0; shift ;;
    --table) need_arg "$@"; table=$2; shift 2 ;;
    --grace) need_arg "$@"; grace=$2; shift 2 ;;
    --jobs) need_arg "$@"; jobs=$2; shift 2 ;;
    --filter) need_arg "$@"; filter=$2; shift 2 ;;
    --pending) need_arg "$@"; pending=$2; shift 2 ;;
    --current) current=1; shift ;;
    --write-measured) need_arg "$@"; measured_out=$2; shift 2 ;;
    -v | --verbose) verbose=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

if [ -z "$daxfsd" ]; then
  if [ -x "$repo/target/debug/daxfsd" ]; then
    daxfsd=$repo/target/debug/daxfsd
  else
    daxfsd=/work/main/target/debug/daxfsd
  fi
fi
[ -x "$daxfsd" ] || die "no daxfsd binary at $daxfsd (build it, or pass --daxfsd)"
if [ "$use_virtiofsd" = 1 ] && [ -z "$virtiofsd" ]; then
  for c in "${DAXFSD_CACHE:-$repo/.cache}/virtiofsd/bin/virtiofsd" /work/main/.cache/virtiofsd/bin/virtiofsd; do
    if [ -x "$c" ]; then virtiofsd=$c; break; fi
  done
  if [ -z "$virtiofsd" ] && [ "${CI:-}" = true ]; then
    die "no virtiofsd found (tests/tools/install-virtiofsd.sh installs it); CI=true, so both daemons must run"
  fi
  if [ -z "$virtiofsd" ]; then
    echo "run-flags: no virtiofsd found (tests/tools/install-virtiofsd.sh installs it); checking daxfsd only" >&2
    use_virtiofsd=0
  fi
fi
if [ "$use_virtiofsd" = 1 ]; then
  [ -x "$virtiofsd" ] || die "no virtiofsd binary at $virtiofsd"
  vv=$("$virtiofsd" --version 2>/dev/null || true)
  case $vv in
    "virtiofsd 1.14."*) ;;
    *) echo "run-flags: warning: the table was measured with virtiofsd 1.14, this is '$vv'" >&2 ;;
  esac
fi
[ -r "$table" ] || die "no table at $table"
# The daemons run in their own directories: use absolute paths.
daxfsd=$(realpath "$daxfsd")
[ "$use_virtiofsd" = 1 ] && virtiofsd=$(realpath "$virtiofsd")
command -v perl >/dev/null || die "perl is needed (it hands the daemon its listening socket)"
if [ -n "$measured_out" ]; then
  [ "$use_virtiofsd" = 1 ] || die "--write-measured needs virtiofsd"
  [ -z "$filter" ] || die "--write-measured measures every row: no --filter"
fi
if [ "$(id -u)" != 0 ] && [ "${CI:-}" = true ]; then
  die "not root: the table was measured as root; CI=true, so every row must run as measured"
fi
if [ "$(id -u)" != 0 ]; then
  echo "run-flags: warning: not root; the table was measured as root (--uid-map, --modcaps, --socket-group, --sandbox=chroot rows differ)" >&2
fi
[[ $grace =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--grace takes seconds, not '$grace'"
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs takes a positive number, not '$jobs'"
command -v pgrep >/dev/null || die "pgrep is needed (procps)"
# accept(2) and accept4(2) by architecture, for the readiness signal.
case $(uname -m) in
  x86_64) accept_calls='^(43|288) ' ;;
  aarch64) accept_calls='^(202|242) ' ;;
  *) accept_calls='^-$' ;;   # unknown: fall back to --grace
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/run-flags.XXXXXX")

# group_members, stop_group: tests/lib/wait.sh.

# Whether a thread of a process of group $1 waits in accept(2).
group_accepting() {
  local p
  for p in $(group_members "$1"); do
    cat /proc/"$p"/task/*/syscall 2>/dev/null | grep -Eq "$accept_calls" && return 0
  done
  return 1
}

cleanup() {
  local rc=$? f
  # Rows still running (an interrupted run): their daemons' groups.
  for f in "$work"/*/pgid; do
    [ -e "$f" ] && { stop_group "$(cat "$f")" 3 || rc=2; }
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_one BIN ARGV-STRING DIR: sets $outcome to accept or refuse (decision
# procedure above); the daemon's output is kept in DIR/out and DIR/err.
outcome=
run_one() {
  local bin=$1 spec=$2 t=$3 pid status='' i n
  mkdir -p "$t/share"
  spec=${spec//@DIR@/$t/share}
  spec=${spec//@SOCK@/$t/vhost.sock}
  spec=${spec//@FD@/3}
  spec=${spec//@TMP@/$t}
  local -a args
  # The table is part of this repository: its argv strings are trusted
  # shell words (quotes and escapes as in a shell command line).
  eval "args=($spec)"
  # perl starts a new session (the daemon leads process group $pid), binds
  # the listening socket, puts it on descriptor 3 (inheritable) and execs
  # the daemon.
  (cd "$t" && exec perl -e '
      use strict; use Socket; use POSIX ();
      my $path = shift @ARGV;
      POSIX::setsid() or die "setsid: $!";
      $^F = 1000;   # descriptors perl opens stay open across exec
      socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
      bind($s, pack_sockaddr_un($path)) or die "bind $path: $!";
      listen($s, 16) or die "listen: $!";
      if (fileno($s) != 3) { POSIX::dup2(fileno($s), 3) or die "dup2: $!"; }
      exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!";
    ' "$t/fd.sock" "$bin" "${args[@]}" </dev/null >"$t/out" 2>"$t/err") &
  pid=$!
  echo "$pid" >"$t/pgid"   # setsid made the daemon the leader of group $pid
  n=$(awk -v g="$grace" 'BEGIN { printf "%d", g * 20 }')
  for ((i = 0; i < n; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" && status=0 || status=$?
      break
    fi
    group_accepting "$pid" && break
    sleep 0.05
  done
  if [ -z "$status" ] || [ "$status" = 0 ]; then
    outcome=accept
  else
    outcome=refuse
  fi
  echo "${status:-running}" >"$t/status"
  stop_group "$pid" 3 || exit 2
  wait "$pid" 2>/dev/null || true
  rm -f "$t/pgid"
}

# The line of a daemon's stderr that says why it stopped: the first one
# naming an error, else the last one.
first_error() {
  grep -m 1 -i 'error' "$1" 2>/dev/null || tail -n 1 "$1" 2>/dev/null || true
}

# run_row N ARGV: runs row N with daxfsd (and virtiofsd) into $work/N/,
# leaving each daemon's outcome in dx.outcome / vf.outcome (with its exit
# status and first error line beside it).
run_row() {
  local r=$work/$1 argv=$2 d
  mkdir -p "$r"
  for d in dx vf; do
    [ "$d" = vf ] && [ "$use_virtiofsd" = 0 ] && continue
    local bin=$daxfsd
    [ "$d" = vf ] && bin=$virtiofsd
    run_one "$bin" "$argv" "$r/$d"
    cat "$r/$d/status" >"$r/$d.status"
    first_error "$r/$d/err" >"$r/$d.error"
    rm -rf "${r:?}/$d"
    echo "$outcome" >"$r/$d.outcome"
  done
}

# Pass 1: the table. Every line is kept (for --write-measured); rows
# selected by --filter are numbered.
lines=() row_of_line=() r_argv=() r_vf=() r_dx=() r_note=()
header_seen=0
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  lines+=("$line"); row_of_line+=(-)
  case $line in '' | '#'*) continue ;; esac
  IFS=$'\t' read -r argv want_vf want_dx note <<<"$line"
  if [ "$header_seen" = 0 ]; then
    if [ "$argv" != argv ] || [ "$want_vf" != virtiofsd ] || [ "$want_dx" != daxfsd ]; then
      die "$table:$lineno: expected the header 'argv<TAB>virtiofsd<TAB>daxfsd<TAB>note'"
    fi
    header_seen=1
    continue
  fi
  case "$want_vf/$want_dx" in
    accept/accept | accept/refuse | refuse/accept | refuse/refuse) ;;
    *) die "$table:$lineno: expected outcomes are accept or refuse, not '$want_vf' / '$want_dx'" ;;
  esac
  if [ -n "$filter" ] && ! grep -qE -- "$filter" <<<"$argv"; then continue; fi
  row_of_line[-1]=${#r_argv[@]}
  r_argv+=("$argv"); r_vf+=("$want_vf"); r_dx+=("$want_dx"); r_note+=("$note")
done <"$table"
[ "$header_seen" = 1 ] || die "$table has no header line"
rows=${#r_argv[@]}
[ "$rows" -gt 0 ] || die "no rows to run (table empty or --filter matched nothing)"

# Pass 2: the rows, --jobs at a time (each row's daemons run in their own
# directories and process groups, so rows do not meet).
for ((i = 0; i < rows; i++)); do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_row "$i" "${r_argv[i]}" &
done
wait

# Pass 3: the verdicts, in table order.
vf_ok=0 vf_bad=0 dx_ok=0 dx_bad=0 vf_acc=0 vf_ref=0 dx_acc=0 dx_ref=0 dx_pending=0
mismatches=() pendings=()
measured=()
for ((l = 0; l < ${#lines[@]}; l++)); do
  i=${row_of_line[l]}
  if [ "$i" = - ]; then measured+=("${lines[l]}"); continue; fi
  argv=${r_argv[i]} want_vf=${r_vf[i]} want_dx=${r_dx[i]} note=${r_note[i]}
  r=$work/$i
  [ -s "$r/dx.outcome" ] || die "row '$argv': the daxfsd run did not finish (a process survived SIGKILL?)"
  got_dx=$(cat "$r/dx.outcome")
  [ "$got_dx" = accept ] && dx_acc=$((dx_acc + 1)) || dx_ref=$((dx_ref + 1))
  mark_dx=ok
  if [ "$got_dx" = "$want_dx" ]; then
    dx_ok=$((dx_ok + 1))
  elif [ -n "$pending" ] && grep -qE -- "$pending" <<<"$argv"; then
    dx_pending=$((dx_pending + 1)); mark_dx=PENDING
    pendings+=("daxfsd: $argv (expected $want_dx, got $got_dx; $note)")
  else
    dx_bad=$((dx_bad + 1)); mark_dx=MISMATCH
    mismatches+=("daxfsd: $argv (expected $want_dx, got $got_dx; $note)")
  fi
  got_vf=- mark_vf=-
  if [ "$use_virtiofsd" = 1 ]; then
    [ -s "$r/vf.outcome" ] || die "row '$argv': the virtiofsd run did not finish"
    got_vf=$(cat "$r/vf.outcome")
    [ "$got_vf" = accept ] && vf_acc=$((vf_acc + 1)) || vf_ref=$((vf_ref + 1))
    mark_vf=ok
    if [ "$got_vf" = "$want_vf" ]; then
      vf_ok=$((vf_ok + 1))
    else
      vf_bad=$((vf_bad + 1)); mark_vf=MISMATCH
      mismatches+=("virtiofsd: $argv (table says $want_vf, got $got_vf)")
    fi
    measured+=("$argv"$'\t'"$got_vf"$'\t'"$want_dx"$'\t'"$note")
  fi
  mark=ok
  [ "$mark_dx" = PENDING ] && mark=PENDING
  if [ "$mark_dx" = MISMATCH ] || [ "$mark_vf" = MISMATCH ]; then mark=DIFF; fi
  if [ "$verbose" = 1 ] || [ "$mark" != ok ]; then
    printf '%-8s daxfsd %-6s (want %-6s) virtiofsd %-6s (table %-6s)  %s\n' \
      "$mark" "$got_dx" "$want_dx" "$got_vf" "$want_vf" "$argv"
    if [ "$verbose" = 1 ] && [ "$mark_dx" != ok ]; then
      echo "    daxfsd ($(cat "$r/dx.status")): $(cat "$r/dx.error")"
    fi
    if [ "$verbose" = 1 ] && [ "$mark_vf" = MISMATCH ]; then
      echo "    virtiofsd ($(cat "$r/vf.status")): $(cat "$r/vf.error")"
    fi
  fi
done

if [ -n "$measured_out" ]; then
  printf '%s\n' "${measured[@]}" >"$measured_out"
  echo "run-flags: wrote the table with the measured virtiofsd column to $measured_out"
fi
echo
echo "rows: $rows"
echo "daxfsd:    accepts $dx_acc, refuses $dx_ref; matches the target on $dx_ok, differs on $dx_bad, pending on $dx_pending"
if [ "$dx_pending" -gt 0 ]; then
  echo "run-flags: $dx_pending rows pending (--pending '$pending'), not failures:"
  printf '  %s\n' "${pendings[@]}"
fi
if [ "$use_virtiofsd" = 1 ]; then
  echo "virtiofsd: accepts $vf_acc, refuses $vf_ref; matches the table on $vf_ok, differs on $vf_bad ($("$virtiofsd" --version 2>/dev/null))"
fi
if [ "$current" = 1 ]; then
  echo "current: daxfsd is $dx_bad rows away from the target ($dx_ok of $rows match)"
  exit 0
fi
if [ $((dx_bad + vf_bad)) -gt 0 ]; then
  echo "run-flags: $((dx_bad + vf_bad)) mismatches:" >&2
  printf '  %s\n' "${mismatches[@]}" >&2
  echo "$dx_ok passed, $dx_bad failed"
  exit 1
fi
echo "$dx_ok passed, 0 failed"
