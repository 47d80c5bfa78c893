#!/bin/sh
# Integration: duetctl against a live duetd.  Starts
# "$BUILD/bin/duetd -c <etc/duet.cfg with a temp socket_dir>", then drives it
# with "$BUILD/bin/duetctl -s <that dir>/api.sock ...".  Prints TAP-style
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
	rm -rf "$tmp"
}
trap cleanup EXIT

sock="$tmp/api.sock"
ctl() { # ctl ARGS... -> stdout in $tmp/out, stderr in $tmp/err, exit status in $rc
	timeout 30 "$CTL" -s "$sock" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	cat "$tmp/out" "$tmp/err" >"$tmp/both"
}

model="$(pwd)/$BUILD/models/duet-tiny.gguf"
sed -e "s|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$model\"|" \
	-e "s|^\([[:space:]]*socket_dir[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$tmp\"|" \
	etc/duet.cfg >"$tmp/duet.cfg"

"$DUETD" -c "$tmp/duet.cfg" >"$tmp/run.out" 2>&1 &
pid=$!
up=0
for _ in $(seq 1 100); do
	if [ -S "$sock" ] && grep -q "\] duetd: up " "$tmp/run.out"; then
		up=1
		break
	fi
	sleep 0.1
done

# 1. health: exit 0 once every worker is ready.
ctl health
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

# 5. metrics is the Prometheus text; status summarizes it.
ctl metrics
grep -q '^duet_generation_tokens_total{' "$tmp/out"
m=$?
ctl status
s=$rc
grep -q '^generated tokens  *[1-9]' "$tmp/out"
t=$?
ctl status --json
[ $m -eq 0 ] && [ $s -eq 0 ] && [ $t -eq 0 ] && [ $rc -eq 0 ] && grep -q '"healthy": true' "$tmp/out"
result $? "metrics has duet_generation_tokens_total; status and status --json" "$tmp/both"

# 6. An API error prints the message of the JSON error body and exits 1.
ctl generate Hello --temp 9
[ $rc -eq 1 ] && grep -q 'temperature' "$tmp/err"
result $? "generate --temp 9 exits 1 with the API's message (got $rc)" "$tmp/both"

# 7. No socket: exit 1 with "cannot connect".
timeout 10 "$CTL" -s /nonexistent health >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q 'cannot connect to /nonexistent: No such file or directory' "$tmp/err"
result $? "duetctl -s /nonexistent health exits 1, cannot connect (got $rc)" "$tmp/err"

# 8. Admin commands are refused honestly; bad usage exits 2.
ctl drain x
a=$rc
grep -q "needs the admin API" "$tmp/err"
g=$?
ctl frobnicate
[ $a -eq 2 ] && [ $g -eq 0 ] && [ $rc -eq 2 ]
result $? "duetctl drain x exits 2 naming the admin API; unknown command exits 2" "$tmp/both"

# 9. SIGTERM: exit 0, nothing alarming in the log.
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] && [ ! -e "$sock" ] && clean_log "$tmp/run.out"
result $? "SIGTERM: duetd exits 0 (got $rc), no [alert]" "$tmp/run.out"

tap_done
