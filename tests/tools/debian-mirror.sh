#!/usr/bin/env bash
# Prints the Debian archive mirror this machine's apt is configured with (the
# URI of the first source carrying the main Debian archive, not -security),
# so that no script of the project names a package host itself.
#   tests/tools/debian-mirror.sh     -> e.g. http://mirror.example/debian
# Looks at deb822 *.sources and one-line *.list / sources.list entries.
set -euo pipefail
die() { echo "debian-mirror: $*" >&2; exit 1; }
shopt -s nullglob
uris=()
for f in /etc/apt/sources.list.d/*.sources; do
  while read -r _ uri; do uris+=("$uri"); done < <(grep -E '^URIs:' "$f")
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -r "$f" ] || continue
  while read -r _ uri _; do uris+=("$uri"); done < <(grep -E '^deb(-src)?\s' "$f" | sed -E 's/\[[^]]*\]//')
done
for uri in "${uris[@]}"; do
  for u in $uri; do
    u=${u%/}
    case $u in */debian) echo "$u"; exit 0 ;; esac
  done
done
die "no Debian archive source (a URI ending in /debian) in /etc/apt/sources.list{,.d}"
