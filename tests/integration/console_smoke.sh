#!/bin/sh
# Integration: duet-console against a live duetd.  Starts
# "$BUILD/bin/duetd" with two mixed partitions (p0, p1) in a temp dir, then
# runs "$BUILD/bin/duet-console" (--once, and inside tmux at 200x50 on
# admin.sock and 80x24 on api.sock), drives load with duetctl, and reads the
# screens back with "tmux capture-pane -p".  Every wait polls with a
# generous limit; nothing depends on how fast the machine is.  Prints
# TAP-style "ok N - what" / "not ok N - what" lines; exits non-zero on any
# failure.  The tmux checks skip when tmux is missing.
# Usage: console_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
CTL="$BUILD/bin/duetctl"
CON="$(pwd)/$BUILD/bin/duet-console"
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-con-XXXXXX")
pid=
TM="tmux -L duet-console-test-$$ -f /dev/null"
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	[ -n "${loadpid:-}" ] && kill "$loadpid" 2>/dev/null
	command -v tmux >/dev/null && $TM kill-server 2>/dev/null
	jobs -p | xargs -r kill 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

api="$tmp/api.sock"
adm="$tmp/admin.sock"
model="$(pwd)/$BUILD/models/duet-tiny.gguf"
cat >"$tmp/duet.cfg" <<EOF
name = "console-smoke";
model = { path = "$model"; };
partitions = (
    { name = "p0"; role = "mixed"; threads = 1; },
    { name = "p1"; role = "mixed"; threads = 1; }
);
api = { socket_dir = "$tmp"; admin_group = ""; canary_interval_ms = 300; };
EOF

start_duetd() {
	# Every step waits 3 ms: requests stay in flight long enough to be seen.
	DUET_TEST_STEP_DELAY_US=3000 "$DUETD" -c "$tmp/duet.cfg" >>"$tmp/run.out" 2>&1 &
	pid=$!
	# Up means healthy: every partition's worker ready and its canary through.
	for _ in $(seq 1 600); do
		[ -S "$api" ] && timeout 10 "$CTL" -s "$api" health >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# p0's state as /v1/status says it.
p0_state() {
	timeout 10 "$CTL" -s "$api" partitions 2>/dev/null | awk '$1 == "p0" { print $5 }'
}

# Poll (up to $2 s, default 30) until the pane $1 shows the extended regex $3
# (screen_lacks: until it no longer shows it).  The last screen is in $tmp/screen.txt.
screen_has() {
	lim=$((${2:-30} * 10))
	i=0
	while [ $i -lt $lim ]; do
		$TM capture-pane -p -t "$1" >"$tmp/screen.txt" 2>/dev/null && grep -E -q "$3" "$tmp/screen.txt" &&
			return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

screen_lacks() {
	lim=$((${2:-30} * 10))
	i=0
	while [ $i -lt $lim ]; do
		$TM capture-pane -p -t "$1" >"$tmp/screen.txt" 2>/dev/null && ! grep -E -q "$3" "$tmp/screen.txt" &&
			return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

start_duetd
up=$?

# 1. --once on api.sock at 80x24 in the C locale: one frame of plain ASCII, read-only,
#    both partitions.
LC_ALL=C timeout 20 "$CON" --once --size 80x24 -s "$api" >"$tmp/once.txt" 2>"$tmp/once.err"
rc=$?
[ $up -eq 0 ] && [ $rc -eq 0 ] && [ "$(wc -l <"$tmp/once.txt")" -eq 24 ] &&
	[ "$(awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$tmp/once.txt")" -le 80 ] &&
	grep -q 'READ-ONLY' "$tmp/once.txt" && grep -q '^p0 .* up ' "$tmp/once.txt" &&
	grep -q '^p1 .* up ' "$tmp/once.txt" &&
	grep -q 'no KV links (all partitions mixed)' "$tmp/once.txt" &&
	grep -q 'event log needs admin.sock' "$tmp/once.txt" && ! grep -q '[[:cntrl:]]' "$tmp/once.txt"
result $? "--once --size 80x24 on api.sock: 24 plain lines, READ-ONLY, p0 and p1 up (rc $rc, up $up)" \
	"$tmp/once.txt"

# 2. --once by default tries admin.sock first: ADMIN, with the event log.
timeout 20 "$CON" --once --size 120x40 --admin-socket "$adm" -s "$api" >"$tmp/once2.txt" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q 'ADMIN' "$tmp/once2.txt" && grep -q 'live, newest first' "$tmp/once2.txt" &&
	grep -E -q '[0-9]{2}:[0-9]{2}:[0-9]{2} [a-z_]+ ' "$tmp/once2.txt"
result $? "--once with admin.sock: ADMIN, the event log replayed (rc $rc)" "$tmp/once2.txt"

# 3. --once with no daemon: exit 1 and say so.
timeout 20 "$CON" --once -s "$tmp/none.sock" >"$tmp/once3.txt" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q 'DISCONNECTED' "$tmp/once3.txt" && grep -q 'none.sock' "$tmp/once3.txt"
result $? "--once with no daemon: exit 1, DISCONNECTED (rc $rc)" "$tmp/once3.txt"

TMUX_CHECKS="admin-screen requests-appear requests-finish drain-key undrain-key readonly-screen readonly-refuses disconnected reconnected quit"
if ! command -v tmux >/dev/null; then
	for c in $TMUX_CHECKS; do
		skip "$c: tmux not found (apt-get install tmux)"
	done
	kill -TERM "$pid" 2>/dev/null
	wait "$pid"
	pid=
	tap_done
	exit
fi

# The consoles: W (200x50, admin.sock first) and R (80x24, api.sock only).
unset TMUX
$TM new-session -d -s W -x 200 -y 50 \
	"env TERM=screen LANG=C.UTF-8 '$CON' -i 0.5 --admin-socket '$adm' -s '$api' 2>'$tmp/conW.err'; echo console-exited \$?; sleep 600"
$TM new-session -d -s R -x 80 -y 24 \
	"env TERM=screen '$CON' -i 0.5 -s '$api' 2>'$tmp/conR.err'; echo console-exited \$?; sleep 600"

# 4. The admin console: header, both partitions, the event log live.
screen_has W 30 'ADMIN' && screen_has W 10 '^p0 ' && screen_has W 10 '^p1 ' &&
	screen_has W 10 'live, newest first' && ! grep -q 'needs admin.sock' "$tmp/screen.txt"
result $? "200x50 console on admin.sock: ADMIN, p0 and p1, live event log" "$tmp/screen.txt"
cp "$tmp/screen.txt" "$tmp/screen-admin.txt"

# 5. Load: requests appear in flight, then finish.
touch "$tmp/load"
(
	while [ -e "$tmp/load" ]; do
		for k in 1 2 3; do
			timeout 60 "$CTL" -s "$api" generate "Once upon a time $k" -n 200 >/dev/null 2>&1 &
		done
		wait
	done
) &
loadpid=$!
screen_has W 60 'cmpl-[0-9a-z]+ .*(prefilling|decoding)'
result $? "requests in flight show in the table (prefilling/decoding)" "$tmp/screen.txt"
cp "$tmp/screen.txt" "$tmp/screen-load.txt"
screen_has W 60 'cmpl-[0-9a-z]+ .* done .* length'
result $? "finished requests show as done with finish reason length" "$tmp/screen.txt"
rm -f "$tmp/load"
wait "$loadpid"
loadpid=

# 6. d drains the selected partition (p0, the first row); u undrains it.
$TM send-keys -t W d
ok_d=1
for _ in $(seq 1 200); do
	case "$(p0_state)" in draining | drained) ok_d=0 && break ;; esac
	sleep 0.1
done
[ $ok_d -eq 0 ] && screen_has W 20 '^p0 .* drain(ing|ed) '
result $? "key d drains p0 (in /v1/status and on screen)" "$tmp/screen.txt"
$TM send-keys -t W u
ok_u=1
for _ in $(seq 1 200); do
	[ "$(p0_state)" = up ] && ok_u=0 && break
	sleep 0.1
done
[ $ok_u -eq 0 ] && screen_has W 20 '^p0 .* up '
result $? "key u undrains p0" "$tmp/screen.txt"

# 7. The read-only console at 80x24: says so, and refuses to act.
screen_has R 30 'READ-ONLY' && screen_has R 10 '^p0 ' && screen_has R 10 'event log needs admin.sock'
result $? "80x24 console on api.sock: READ-ONLY, p0, no event log" "$tmp/screen.txt"
$TM send-keys -t R d
screen_has R 10 'read-only: drain needs admin.sock' && [ "$(p0_state)" = up ]
result $? "read-only console: d is refused with a message, p0 stays up" "$tmp/screen.txt"

# 8. Kill duetd: both consoles say disconnected; restart: both recover.
kill -KILL "$pid"
wait "$pid" 2>/dev/null
pid=
rm -f "$api" "$adm"
screen_has W 30 'DISCONNECTED' && screen_has R 30 'DISCONNECTED'
result $? "duetd killed: the consoles show DISCONNECTED" "$tmp/screen.txt"
start_duetd
up=$?
[ $up -eq 0 ] && screen_lacks W 60 'DISCONNECTED' && screen_has W 10 'ADMIN' &&
	screen_has W 10 '^p0 .* up ' && screen_lacks R 60 'DISCONNECTED' && screen_has R 10 '^p0 .* up '
result $? "duetd restarted: the consoles reconnect (up $up)" "$tmp/screen.txt"

# 9. q quits (exit 0, terminal restored); SIGTERM ends the other one.
$TM send-keys -t W q
screen_has W 20 'console-exited 0'
q=$?
shpid=$($TM list-panes -t R -F '#{pane_pid}')
cpid=$(pgrep -P "$shpid" -x duet-console)
[ -n "$cpid" ] && kill -TERM "$cpid"
screen_has R 20 'console-exited 143'
t=$?
[ $q -eq 0 ] && [ $t -eq 0 ] && ! grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error' "$tmp/conW.err" "$tmp/conR.err"
result $? "q quits with status 0; SIGTERM ends the console (status 143)" "$tmp/screen.txt"

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] && clean_log "$tmp/run.out"
result $? "duetd exits 0 on SIGTERM, no [alert]" "$tmp/run.out"

tap_done
