#!/usr/bin/env bash
# Runs each cmocka unit-test binary given as an argument and sums the results into one
# closing line, "N passed, N failed". Exits non-zero if any test failed or a binary crashed.
set -u
passed=0
failed=0
for t in "$@"; do
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -E '^\[  (FAILED|  ERROR) ' || true
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    passed=$((passed + ${p:-0}))
    if [ "$rc" -ne 0 ] && [ -z "$f" ]; then
        echo "unit: $t exited $rc"
        printf '%s\n' "$out" | tail -20
        f=1
    fi
    failed=$((failed + ${f:-0}))
    echo "unit: $(basename "$t"): ${p:-0} passed, ${f:-0} failed"
done
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
