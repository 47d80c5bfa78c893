# Shared by the integration scripts (sourced, not run): TAP-style result
# lines that tests/run-tests.sh counts, and the log check every script
# applies to the daemons it starts.  Call tap_done last.
n=0
bad=0

ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}

# not_ok "what" [file whose contents explain the failure]
not_ok() {
	n=$((n + 1))
	bad=$((bad + 1))
	echo "not ok $n - $1"
	[ -n "${2:-}" ] && [ -f "$2" ] && sed -e 's/^/    # /' -e '$a\' "$2"
	return 0
}

skip() {
	n=$((n + 1))
	echo "ok $n - # SKIP $1"
}

# result STATUS "what" [file to show on failure]
result() {
	if [ "$1" -eq 0 ]; then ok "$2"; else not_ok "$2" "${3:-}"; fi
}

# A log must hold no [alert] line and no sanitizer report.
clean_log() {
	! grep -q -E '\[alert\]|ERROR: AddressSanitizer|runtime error:|LeakSanitizer' "$1"
}

# clean_logs OUT FILE...: true when every FILE passes clean_log; the others
# are appended to OUT (to show with the result).
clean_logs() {
	_out=$1
	_ok=0
	shift
	for _f in "$@"; do
		clean_log "$_f" || { _ok=1; cat "$_f" >>"$_out"; }
	done
	return $_ok
}

# stop: SIGTERM the daemon in $pid and wait for it; its exit status is
# returned and left in $rc, and pid is cleared (so no cleanup kills it again).
stop() {
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	pid=
	return $rc
}

tap_done() {
	echo "1..$n"
	[ "$bad" -eq 0 ]
}

# jq_true [--arg NAME VALUE] EXPR [FILE]: true when the input is a JSON value
# for which EXPR is true.  Unlike jq -e, empty input (a daemon that did not
# answer) is false.  Needs $JQ.
jq_true() {
	if [ "$1" = --arg ]; then
		_k=$2
		_v=$3
		shift 3
		_e=$1
		shift
		"$JQ" -n -e --arg "$_k" "$_v" "input | ($_e)" "$@"
	else
		_e=$1
		shift
		"$JQ" -n -e "input | ($_e)" "$@"
	fi
}
