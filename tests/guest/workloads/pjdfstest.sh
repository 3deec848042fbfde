# Workload "pjdfstest" (guest side): the POSIX conformance suite on the
# virtio-fs mount. Needs the pjdfstest binary, its configuration and users in
# the initramfs: run it through tests/conformance/run-guest.sh, which adds
# them. Every test's verdict is printed as `DAXFSD-PJDFSTEST <test> <status>`
# for the host side; the step fails only if the suite did not run to its
# summary (failing tests are counted and judged on the host).
# shellcheck shell=sh

run_pjdfstest() {
  [ -x /bin/pjdfstest ] ||
    fail "no /bin/pjdfstest: build the initramfs with tests/conformance/run-guest.sh"
  mkdir -p "$MNT/pjdfstest" /tmp/pjdfstest-secondary
  # The suite switches to unprivileged users, who must reach its directory.
  chmod 755 "$MNT" "$MNT/pjdfstest"
  cd "$MNT/pjdfstest"
  set +e
  /bin/pjdfstest -c /etc/pjdfstest.toml -p "$MNT/pjdfstest" \
    -s /tmp/pjdfstest-secondary ${ARG_pjdfstest_filter:+"$ARG_pjdfstest_filter"} \
    >/tmp/pjdfstest.out 2>&1
  rc=$?
  set -e
  cd /
  # Verdict lines: "<module>::<test>[::<type>]   ok|skipped|FAILED".
  awk '/^[a-z0-9_]+(::[A-Za-z0-9_]+)+[ \t]/ { print "DAXFSD-PJDFSTEST " $1 " " tolower($NF) }' \
    /tmp/pjdfstest.out
  # The first lines of each failure's explanation, for the log reader.
  awk '/ FAILED$/ { n = 3; print "pjdfstest-failure: " $1; next }
       !/^\t/ { n = 0 }
       n > 0 { print "pjdfstest-failure:   " $0; n-- }' /tmp/pjdfstest.out
  summary=$(grep '^Summary:' /tmp/pjdfstest.out) ||
    { tail -n 20 /tmp/pjdfstest.out; fail "pjdfstest gave no summary (exit $rc)"; }
  echo "$summary"
  value pjdfstest_exit "$rc"
  rm -rf "$MNT/pjdfstest"
}

step pjdfstest run_pjdfstest
