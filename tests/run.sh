#!/bin/sh
# run.sh - run every CUnit binary given as arguments, then every integration test script
# (tests/integration/*.sh), and close with one "N passed, N failed" line. Exit 1 on any failure.
# TESTS=name1,name2 limits integration scripts to those names.
set -u
BUILD=${BUILD:-build}
mkdir -p "$BUILD/bin" "$BUILD/lib"
export SLUICE_BIN="$(cd "$BUILD/bin" && pwd)"
export SLUICE_LIB="$(cd "$BUILD" && pwd)/lib"
export SLUICE_TOP="$(pwd)"
passed=0
failed=0
failures=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for t in "$@"; do
	echo "=== unit: $t"
	"$t" >"$log" 2>&1
	rc=$?
	# CUnit's run summary row: "tests  total  ran  passed  failed  inactive"
	row=$(grep -E '^ +tests +[0-9]+' "$log" | tail -1)
	p=$(echo "$row" | awk '{print $4}')
	f=$(echo "$row" | awk '{print $5}')
	if [ -z "$p" ]; then
		cat "$log"
		echo "--- $t crashed or printed no summary (exit $rc)"
		failed=$((failed + 1))
		failures="$failures $t"
		continue
	fi
	grep -E 'FAILED|Suite .* failed|^ +[0-9]+\. ' "$log" | head -40
	tail -8 "$log"
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
		[ "$f" -eq 0 ] && failed=$((failed + 1))
		failures="$failures $t"
	fi
done

for s in tests/integration/*.sh; do
	[ -e "$s" ] || continue
	name=$(basename "$s" .sh)
	if [ -n "${TESTS:-}" ] && ! echo ",$TESTS," | grep -q ",$name,"; then
		continue
	fi
	echo "=== integration: $name"
	start=$(date +%s)
	# Each script runs in a scratch directory of its own, so whatever a tool drops in its
	# working directory (fio's verify state files, say) never lands in the checkout.
	scratch=$(mktemp -d)
	if (cd "$scratch" && timeout 300 sh "$SLUICE_TOP/$s") >"$log" 2>&1; then
		echo "ok   $name ($(($(date +%s) - start)) s)"
		passed=$((passed + 1))
	else
		tail -40 "$log"
		echo "FAIL $name"
		failed=$((failed + 1))
		failures="$failures $name"
	fi
	rm -rf "$scratch"
done

[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
