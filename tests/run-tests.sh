#!/bin/sh
# Runs the cmocka test binaries and replays the fuzz seed corpora, then prints
# one summary line: "tests: N passed, N failed, N skipped".
# and runs the integration scripts in tests/integration.
# Usage: run-tests.sh TEST_BIN... -- FUZZ_TARGET...
# Environment: BUILD (build dir with tests/replay_*), DUET_SHARED (test data).
set -u
BUILD=${BUILD:-build}
passed=0
failed=0
skipped=0
failed_names=""
log_dir="$BUILD/test-logs"
mkdir -p "$log_dir"

if [ -n "${DUET_SHARED:-}" ] && [ ! -d "$DUET_SHARED" ]; then
	echo "tests: shared test data not found at $DUET_SHARED: tests that need it will skip"
fi

count() { # count LABEL FILE -> the N of "[  LABEL ] N test(s)"
	sed -n "s/^\[  $1 *\] \([0-9][0-9]*\) test(s).*/\1/p" "$2" | tail -n 1
}

while [ $# -gt 0 ] && [ "$1" != "--" ]; do
	bin=$1
	shift
	name=$(basename "$bin")
	out="$log_dir/$name.log"
	"$bin" >"$out" 2>&1
	rc=$?
	p=$(count PASSED "$out")
	f=$(count FAILED "$out")
	s=$(count SKIPPED "$out")
	p=${p:-0}
	f=${f:-0}
	s=${s:-0}
	if [ $rc -ne 0 ] && [ "$f" = 0 ]; then
		f=1 # crashed or a sanitizer stopped it before cmocka's summary
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	skipped=$((skipped + s))
	if [ $rc -ne 0 ]; then
		failed_names="$failed_names $name"
		echo "--- $name FAILED (exit $rc); its output:"
		cat "$out"
	else
		# Skips say why; show those lines, and cmocka's summary lines.
		grep -E '^\[  SKIP|^\[==========\] [0-9]+ test|^\[  (PASSED|SKIPPED) ' "$out" |
			sed "s/^/$name: /"
	fi
done
[ $# -gt 0 ] && shift

for target in "$@"; do
	bin="$BUILD/tests/replay_$target"
	out="$log_dir/replay_$target.log"
	if "$bin" "tests/fuzz/corpus/$target" >"$out" 2>&1; then
		passed=$((passed + 1))
		echo "replay_$target: $(tail -n 1 "$out")"
	else
		failed=$((failed + 1))
		failed_names="$failed_names replay_$target"
		echo "--- replay_$target FAILED; its output:"
		cat "$out"
	fi
done

# Integration scripts print TAP lines: "ok N - what" / "not ok N - what".
for script in tests/integration/*.sh; do
	name=$(basename "$script" .sh)
	out="$log_dir/$name.log"
	"$script" "$BUILD" >"$out" 2>&1
	rc=$?
	p=$(grep '^ok ' "$out" | grep -c -v '# SKIP')
	s=$(grep -c '^ok .*# SKIP' "$out")
	f=$(grep -c '^not ok ' "$out")
	skipped=$((skipped + s))
	if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	if [ $rc -ne 0 ]; then
		failed_names="$failed_names $name"
		echo "--- $name FAILED (exit $rc); its output:"
		cat "$out"
	else
		sed "s/^/$name: /" "$out" | grep -v ': 1\.\.'
	fi
done

[ -n "$failed_names" ] && echo "tests: failed:$failed_names"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
