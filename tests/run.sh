#!/bin/sh
# Runs the whole GoogleTest suite: unit tests, then integration tests that
# start their own redis-server, PostgreSQL, HTTP(S) server and sshd on
# loopback. Ends with one summary line "tests: N passed, N failed, N skipped".
# Usage: tests/run.sh BUILD_DIR DAEMON_BINARY
set -u
build=$1
export DJINN_CONSUMER="$2"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for suite in unit_tests integration_tests; do
  echo "== $suite"
  "$build/$suite" --gtest_brief=1 >"$out/$suite.log" 2>&1
  rc=$?
  cat "$out/$suite.log"
  [ $rc -eq 0 ] || status=1
  grep -q '^\[==========\] .* ran\.' "$out/$suite.log" || { echo "$suite: did not finish (exit $rc)"; status=1; }
done
count() { # count PATTERN: sum of N in lines "[ PATTERN ] N test(s)"
  cat "$out"/*.log | sed -n "s/^\[  *$1 *\] \([0-9][0-9]*\) tests*[,.].*/\1/p" | awk '{s+=$1} END {print s+0}'
}
# gtest --brief prints the PASSED and SKIPPED counts but not always FAILED:
# failed = ran - passed - skipped.
ran=$(cat "$out"/*.log | sed -n 's/^\[==========\] \([0-9][0-9]*\) tests* from .* ran\..*/\1/p' | awk '{s+=$1} END {print s+0}')
passed=$(count PASSED)
skipped=$(count SKIPPED)
failed=$((ran - passed - skipped))
[ "$failed" -eq 0 ] || status=1
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit $status
