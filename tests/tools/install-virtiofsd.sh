#!/usr/bin/env bash
# Installs the reference daemon, upstream virtiofsd, into the project cache
# (default: <repo>/.cache/virtiofsd) if it is not there yet, and prints its path.
# Used by side-by-side harness runs, benchmarks and the flag-compatibility
# table (tests/compat/); never by the daemon itself.
#
# The version is pinned (VIRTIOFSD_VERSION, default 1.14.0): the flag table in
# tests/compat/virtiofsd-flags.tsv was measured against it. A cached binary of
# another version is replaced. Several callers at once (harness tests run in
# parallel) are serialized by a lock next to the cache, so one builds and the
# others wait and find it; apt waits for another apt's lock too.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/wait.sh
. "$repo/tests/lib/wait.sh"
cache=${DAXFSD_CACHE:-$repo/.cache}
version=${VIRTIOFSD_VERSION:-1.14.0}
root=$cache/virtiofsd
bin=$root/bin/virtiofsd
mkdir -p "$cache"
exec 9>"$cache/virtiofsd.lock"
flock -w "${DAXFSD_INSTALL_TIMEOUT:-3600}" 9 || {
  echo "install-virtiofsd: another install held $cache/virtiofsd.lock too long" >&2
  exit 1
}
have=$("$bin" --version 2>/dev/null | awk '{print $2}' || true)
if [ ! -x "$bin" ] || [ "$have" != "$version" ]; then
  need=()
  for p in libseccomp-dev libcap-ng-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install-virtiofsd: missing packages ${need[*]} (run as root or install them)" >&2
      exit 1
    fi
    install_step "apt-get update" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    DEBIAN_FRONTEND=noninteractive install_step "apt-get install ${need[*]}" \
      apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >&2
  fi
  install_step "cargo install virtiofsd" \
    cargo install --locked --force --root "$root" --version "$version" virtiofsd >&2
fi
echo "$bin"
