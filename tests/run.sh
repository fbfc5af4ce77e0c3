#!/bin/sh
# Runs every test: C tests (build/tests/test_*), Lua specs (tests/lua/*_spec.lua through the
# binary). Each prints "ok - ..." / "not ok - ..." lines; a test program that crashes or exits
# non-zero without a "not ok" line counts as one failure. Ends with "N passed, N failed".
BUILD=${BUILD:-build}
BIN=${BIN:-./tdrl}
export TDRL_TEST=1
pass=0; fail=0
log=$(mktemp); trap 'rm -f "$log"' EXIT
run() { # name, command...
  name=$1; shift
  "$@" >"$log" 2>&1; rc=$?
  p=$(grep -c '^ok - ' "$log"); f=$(grep -c '^not ok - ' "$log")
  grep -v '^ok - ' "$log"
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    echo "not ok - $name exited with status $rc"; f=1
  fi
  echo "# $name: $p passed, $f failed"
  pass=$((pass + p)); fail=$((fail + f))
}
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] && run "$(basename "$t")" "$t"
done
for s in tests/lua/*_spec.lua; do
  [ -f "$s" ] && run "$(basename "$s")" "$BIN" tests/lua/spec.lua "$s"
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
