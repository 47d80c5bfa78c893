#!/bin/sh
# Integration: duetctl against a live duetd.  Starts
# "$BUILD/bin/duetd -c <etc/duet.cfg with a temp socket_dir>", then drives it
# with "$BUILD/bin/duetctl -s <that dir>/api.sock ..." and, for the admin
# commands, "--admin-socket <that dir>/admin.sock".  Prints TAP-style
# "ok N - what" / "not ok N - what" lines; exits non-zero on any failure.
# Usage: duetctl_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
CTL="$BUILD/bin/duetctl"
GEN="$BUILD/bin/duet-generate"
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-ctl-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	jobs -p | xargs -r kill 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

sock="$tmp/api.sock"
adm="$tmp/admin.sock"
ctl() { # ctl ARGS... -> stdout in $tmp/out, stderr in $tmp/err, exit status in $rc
	timeout 30 "$CTL" -s "$sock" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	cat "$tmp/out" "$tmp/err" >"$tmp/both"
}
actl() { # actl ARGS...: an admin command on admin.sock, results as for ctl
	timeout 30 "$CTL" --admin-socket "$adm" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	cat "$tmp/out" "$tmp/err" >"$tmp/both"
}
# Poll (up to 20 s) until "duetctl partitions" shows partition decode0 in state $1.
wait_part_state() {
	for _ in $(seq 1 200); do
		timeout 10 "$CTL" -s "$sock" partitions 2>/dev/null | grep -q "^decode0 .* $1 " && return 0
		sleep 0.1
	done
	return 1
}

model="$(pwd)/$BUILD/models/duet-tiny.gguf"
sed -e "s|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$model\"|" \
	-e "s|^\([[:space:]]*socket_dir[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$tmp\"|" \
	-e "s|^\([[:space:]]*canary_interval_ms[[:space:]]*=[[:space:]]*\)[0-9]*|\1300|" \
	-e "s|^\([[:space:]]*admin_group[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"\"|" \
	etc/duet.cfg >"$tmp/duet.cfg"

# Every step waits 3 ms: a long generation stays in flight long enough to cancel it.
DUET_TEST_STEP_DELAY_US=3000 "$DUETD" -c "$tmp/duet.cfg" >"$tmp/run.out" 2>&1 &
pid=$!
up=0
for _ in $(seq 1 100); do
	if [ -S "$sock" ] && grep -q "\] duetd: up " "$tmp/run.out"; then
		up=1
		break
	fi
	sleep 0.1
done

# 1. health: exit 0 once every worker is ready and the first canary went through.
for _ in $(seq 1 100); do
	ctl health
	[ $rc -eq 0 ] && break
	sleep 0.1
done
[ $up -eq 1 ] && [ $rc -eq 0 ] && grep -q '^ok$' "$tmp/out"
result $? "duetctl health exits 0 (got $rc, up=$up)" "$tmp/both"

# 2. A greedy completion prints the bytes duet-generate prints.
"$GEN" -m "$model" -p Hello -n 8 >"$tmp/want" 2>/dev/null
ctl generate Hello -n 8 --temp 0
cp "$tmp/out" "$tmp/got"
[ $rc -eq 0 ] && [ -s "$tmp/want" ] && cmp -s "$tmp/want" "$tmp/got"
result $? "duetctl generate Hello -n 8 --temp 0 = duet-generate (byte for byte)" "$tmp/both"

# 3. The streamed version gives the same text.
ctl generate Hello -n 8 --temp 0 --stream
[ $rc -eq 0 ] && cmp -s "$tmp/want" "$tmp/out"
result $? "duetctl generate --stream gives the same bytes" "$tmp/both"

# 4. chat, tokenize, models answer.
ctl chat Hi -n 4 --temp 0
c1=$rc
ctl chat Hi -n 4 --temp 0 --stream --system 'Be brief.'
c2=$rc
ctl tokenize Hello
c3=$rc
grep -q '^7 tokens$' "$tmp/out"
c4=$?
ctl models
[ "$c1$c2$c3$c4$rc" = 00000 ] && grep -q '^duet-tiny$' "$tmp/out"
result $? "chat, chat --stream, tokenize, models exit 0 ($c1 $c2 $c3 $c4 $rc)" "$tmp/both"

# 5. metrics is the Prometheus text; status summarizes /v1/status, --json is it.
ctl metrics
grep -q '^duet_generation_tokens_total{' "$tmp/out"
m=$?
ctl status
s=$rc
grep -q '^generated tokens  *[1-9]' "$tmp/out" && grep -q '^health  *ok$' "$tmp/out" &&
	grep -q '^access  *read-only$' "$tmp/out" && grep -q '^decode0  *decode .* up ' "$tmp/out"
t=$?
ctl status --json
[ $m -eq 0 ] && [ $s -eq 0 ] && [ $t -eq 0 ] && [ $rc -eq 0 ] &&
	grep -q '"partitions"' "$tmp/out" && grep -q '"name": *"decode0"' "$tmp/out"
result $? "metrics; status shows health, access, the partition table; status --json is /v1/status" \
	"$tmp/both"

# 6. An API error prints the message of the JSON error body and exits 1.
ctl generate Hello --temp 9
[ $rc -eq 1 ] && grep -q 'temperature' "$tmp/err"
result $? "generate --temp 9 exits 1 with the API's message (got $rc)" "$tmp/both"

# 7. No socket: exit 1 with "no daemon at".
timeout 10 "$CTL" -s /nonexistent health >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q 'no daemon at /nonexistent (is duetd running?)' "$tmp/err"
result $? "duetctl -s /nonexistent health exits 1: no daemon at /nonexistent (got $rc)" "$tmp/err"

# 8. Bad usage exits 2; an admin command on api.sock gets the daemon's 403 message.
ctl frobnicate
u1=$rc
ctl drain
u2=$rc
ctl drain decode0
[ $u1 -eq 2 ] && [ $u2 -eq 2 ] && [ $rc -eq 1 ] && grep -q 'HTTP 403' "$tmp/err"
result $? "unknown command and drain without a name exit 2; drain on api.sock: 403 ($u1 $u2 $rc)" \
	"$tmp/both"

# 9. partitions; drain and undrain on admin.sock, seen in /v1/status.
ctl partitions
p=$rc
grep -q '^decode0  *decode ' "$tmp/out"
p2=$?
actl drain decode0
d=$rc
grep -E -q '^decode0: (draining|drained)$' "$tmp/out"
d2=$?
wait_part_state drained
w1=$?
actl undrain decode0
ud=$rc
grep -q '^decode0: up$' "$tmp/out"
ud2=$?
wait_part_state up
w2=$?
[ "$p$p2$d$d2$w1$ud$ud2$w2" = 00000000 ]
result $? "partitions; drain decode0 -> drained; undrain decode0 -> up ($p$p2 $d$d2$w1 $ud$ud2$w2)" "$tmp/both"

# 10. drain of an unknown partition: exit 1 with the daemon's message.
actl drain nope
[ $rc -eq 1 ] && grep -q 'HTTP 404' "$tmp/err"
result $? "drain nope exits 1 with the daemon's 404 message (got $rc)" "$tmp/both"

# 11. requests and cancel: a long generation is listed, cancelled, then 404.
timeout 60 "$CTL" -s "$sock" generate "Once upon a time" -n 900 --stream >"$tmp/long.out" 2>"$tmp/long.err" &
gpid=$!
id=
for _ in $(seq 1 200); do
	timeout 10 "$CTL" --admin-socket "$adm" requests >"$tmp/reqs.out" 2>&1
	id=$(awk '$3 == "decoding" || $3 == "prefilling" || $3 == "queued" { print $1; exit }' "$tmp/reqs.out")
	[ -n "$id" ] && break
	sleep 0.1
done
actl cancel "$id"
c1=$rc
grep -q "^$id: cancelled$" "$tmp/out"
c2=$?
wait "$gpid"
g=$?
actl cancel "$id"
c3=$rc
[ -n "$id" ] && grep -q '^ID  *TENANT  *STATE' "$tmp/reqs.out" && [ "$c1$c2" = 00 ] && [ $g -ne 0 ] &&
	[ $c3 -eq 1 ]
result $? "requests lists '$id'; cancel ends its stream (exit $g); a second cancel exits 1 ($c1$c2 $c3)" \
	"$tmp/reqs.out"

# 12. reload prints what it applied; events replays the drain and the cancel.
actl reload
r=$rc
grep -q '^reloaded$' "$tmp/out"
r2=$?
timeout 3 "$CTL" --admin-socket "$adm" events >"$tmp/events.out" 2>&1
[ "$r$r2" = 00 ] && grep -q ' drain  *decode0: ' "$tmp/events.out" && grep -q ' cancel ' "$tmp/events.out"
result $? "reload; events follows /admin/events (drain and cancel lines)" "$tmp/events.out"

# 13. Another uid: permission denied on the socket, said so.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	chmod 0711 "$tmp"
	setpriv --reuid=65534 --regid=65534 --clear-groups "$CTL" --admin-socket "$adm" requests \
		>"$tmp/out" 2>"$tmp/err"
	rc=$?
	chmod 0700 "$tmp"
	[ $rc -eq 1 ] && grep -q "permission denied on $adm: your user needs group duet-admin" "$tmp/err"
	result $? "uid 65534 on admin.sock: exit 1, 'permission denied ... needs group duet-admin'" "$tmp/err"
else
	skip "another uid on admin.sock: needs root and setpriv"
fi

# 14. shutdown: the daemon drains and exits 0, nothing alarming in the log.
actl shutdown
c=$rc
grep -q '^shutting down$' "$tmp/out"
c2=$?
wait "$pid"
rc=$?
pid=
[ "$c$c2" = 00 ] && [ $rc -eq 0 ] && [ ! -e "$sock" ] && clean_log "$tmp/run.out"
result $? "duetctl shutdown: duetd exits 0 (got $rc), no [alert]" "$tmp/run.out"

tap_done
