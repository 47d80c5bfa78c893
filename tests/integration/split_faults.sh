#!/bin/sh
# Integration: faults under a split configuration (one prefill, one decode
# partition).  While 16 greedy streams run, kill -9 the prefill worker
# early (most requests not transferred yet) and in the middle of the
# transfers, and the decode worker early (most requests not handed over
# yet) and in the middle of decoding (over shm; the mid-transfer case over
# tcp too, where it resets the connection).  Every
# stream must end exactly once ([DONE] once) with duet-generate's full text:
# no token lost or duplicated; afterwards no KV block stays leased or in
# use on either partition, /health is back to 200, and the log has no
# [alert].  Steps are slowed (DUET_TEST_STEP_DELAY_US) so the kills land
# where they are meant to.  Needs curl and jq.
# Usage: split_faults.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
GEN="$BUILD/bin/duet-generate"
MODEL="$(pwd)/$BUILD/models/duet-tiny.gguf"
CURL=/usr/bin/curl
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-faults-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	[ -n "${DUET_KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

if [ ! -x "$CURL" ] || [ -z "$JQ" ]; then
	skip "split faults: curl or jq not found (make test installs them)"
	tap_done
	exit
fi

api="$tmp/api.sock"
printf 'duet split test key 0123456789abcdef\n' >"$tmp/psk"
chmod 600 "$tmp/psk"
for d in shm tcp; do
	cat >"$tmp/$d.cfg" <<EOF
model = { path = "$MODEL"; };
kv = { memory_mb = 64; };
transport = { driver = "$d"; psk_file = "$tmp/psk"; };
partitions = (
    { name = "pre"; role = "prefill"; threads = 1; max_batch_tokens = 32; max_seqs = 8; },
    { name = "dec"; role = "decode"; threads = 1; }
);
api = { socket_dir = "$tmp"; canary_interval_ms = 300; breaker_failures = 100; };
EOF
done

status() { "$CURL" -sS --max-time 10 --unix-socket "$api" http://duet/v1/status 2>/dev/null; }
wait_status() { # jq expression, up to 30 s
	for _ in $(seq 1 600); do
		status | jq_true "$1" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	return 1
}
stream() { # prompt max_tokens out-file; run it with &: it becomes curl, $! is curl's pid
	body=$("$JQ" -cn --arg p "$1" --argjson n "$2" \
		'{model:"m",prompt:$p,max_tokens:$n,temperature:0,stream:true}')
	exec "$CURL" -sS -N --max-time 90 --unix-socket "$api" -H 'Content-Type: application/json' \
		--data-binary "$body" http://duet/v1/completions >"$3" 2>&1
}
stream_text() {
	sed -n 's/^data: //p' "$1" | grep -v '^\[DONE\]$' | "$JQ" -rj '.choices[0].text // empty'
}
pid_of() { status | "$JQ" ".partitions[] | select(.name == \"$1\") | .pid"; }

# Prompts of about 100 tokens: 4 prefill chunks each, so transfers take a while;
# 96 output tokens keep the first stream decoding long enough that a poll
# sees the kill points even on a loaded sanitizer build.
LONG="once upon a time there was a little robot who lived in a big house with a cat, a dog and a very old clock that sang every hour of the day and night, and the robot liked to"
for i in $(seq 1 16); do
	"$GEN" -m "$MODEL" -p "Tale $i: $LONG" -n 96 2>>"$tmp/gen.err" >"$tmp/want$i"
done

# scenario NAME DRIVER VICTIM WHEN(jq expression on /v1/status: when to kill)
scenario() {
	name=$1
	DUET_TEST_STEP_DELAY_US=4000 "$DUETD" -c "$tmp/$2.cfg" >"$tmp/$name.out" 2>&1 &
	pid=$!
	if ! wait_status '.state == "up" and .health.ok == true and .links[0].state == "up"'; then
		not_ok "$name: daemon up with the link up" "$tmp/$name.out"
		kill -KILL "$pid"
		pid=
		return
	fi
	victim=$(pid_of "$3")
	pids=
	for i in $(seq 1 16); do
		stream "Tale $i: $LONG" 96 "$tmp/$name.st$i" &
		pids="$pids $!"
	done
	wait_status "$4"
	hit=$?
	at=$(status | "$JQ" -c '{transfers: .links[0].transfers, live: [.requests[] | select(.e2e_ms == null) | .state]}')
	kill -KILL "$victim"
	for j in $pids; do wait "$j"; done
	fails=0
	for i in $(seq 1 16); do
		got=$(stream_text "$tmp/$name.st$i")
		if [ "$got" != "$(cat "$tmp/want$i")" ] ||
			[ "$(grep -c '^data: \[DONE\]' "$tmp/$name.st$i")" != 1 ]; then
			fails=$((fails + 1))
			{
				echo "stream $i: want: $(cat "$tmp/want$i")"
				cat "$tmp/$name.st$i"
			} >>"$tmp/$name.diff"
		fi
	done
	cat "$tmp/$name.out" >>"$tmp/$name.diff"
	[ $hit -eq 0 ] && [ $fails -eq 0 ] &&
		grep -q "partition $3: worker $victim killed by signal 9" "$tmp/$name.out"
	result $? "$name: $3 worker killed ($at): 16 streams complete and correct ($fails not)" "$tmp/$name.diff"
	wait_status '.health.ok == true and .links[0].state == "up" and
		([.partitions[] | select(.kv.leased != 0 or .kv.used != 0)] | length == 0)'
	result $? "$name: healthy again; no KV block leased or in use on either partition" "$tmp/$name.out"
	stop
	[ $rc -eq 0 ] && clean_log "$tmp/$name.out"
	result $? "$name: exit 0 (got $rc), no [alert]" "$tmp/$name.out"
}

ALL='[.requests[] | select(.e2e_ms == null)] | length == 16'
scenario prefill-early shm pre "$ALL"
scenario prefill-mid-transfer shm pre '.links[0].transfers >= 3'
scenario decode-early shm dec "$ALL"
scenario decode-mid-decode shm dec '[.requests[] | select(.e2e_ms == null and .output_tokens >= 4)] | length >= 2'
scenario tcp-prefill-mid-transfer tcp pre '.links[0].transfers >= 3'

# Clients that go away while their requests are queued, leasing, prefilling and
# decoding: every request ends (cancelled), both sides free everything.
DUET_TEST_STEP_DELAY_US=4000 "$DUETD" -c "$tmp/shm.cfg" >"$tmp/cancel.out" 2>&1 &
pid=$!
wait_status '.state == "up" and .health.ok == true and .links[0].state == "up"'
pids=
# 400 tokens each: the first stream decodes for well over a second, so the
# moment when all 16 are live is wide enough for a poll to see it even on a
# loaded sanitizer build (with 48 tokens it once closed between two polls).
for i in $(seq 1 16); do
	stream "Tale $i: $LONG" 400 "$tmp/cancel.st$i" &
	pids="$pids $!"
done
wait_status '([.requests[] | select(.e2e_ms == null)] | length == 16) and .links[0].transfers >= 2'
reached=$?
at=$(status | "$JQ" -c '[.requests[] | select(.e2e_ms == null) | .state]')
[ $reached -eq 0 ] || at="kill point never reached: $at"
# Every client at once (each stream is its curl); a few may finish first.
kill -KILL $pids 2>/dev/null
for j in $pids; do wait "$j" 2>/dev/null; done # no "Killed" notices
wait_status '([.requests[] | select(.e2e_ms == null)] | length == 0)
	and ([.requests[] | select(.state == "cancelled")] | length >= 8)
	and ([.requests[] | select(.state == "cancelled" or .state == "done")] | length == 16)
	and ([.partitions[] | select(.kv.leased != 0 or .kv.used != 0)] | length == 0)'
r=$?
[ $reached -eq 0 ] || r=1
result $r "16 clients gone mid-request ($at): each ends once (most cancelled), nothing leased or in use on either side" "$tmp/cancel.out"
stop
[ $rc -eq 0 ] && clean_log "$tmp/cancel.out"
result $? "cancellations: exit 0 (got $rc), no [alert]" "$tmp/cancel.out"

# Circuit breaker: two deaths in a row of the decode worker open it (no new work;
# /health says why); a request sent meanwhile waits in the router; once the
# cool-down passed a canary gets through, the breaker closes and the request is served.
sed -e 's/breaker_failures = 100;/breaker_failures = 2; breaker_cooldown_ms = 1500;/' \
	"$tmp/shm.cfg" >"$tmp/breaker.cfg"
"$DUETD" -c "$tmp/breaker.cfg" >"$tmp/breaker.out" 2>&1 &
pid=$!
wait_status '.state == "up" and .health.ok == true and .links[0].state == "up"'
kill -KILL "$(pid_of dec)"
wait_status '.partitions[1].state == "up" and .partitions[1].restarts == 1'
kill -KILL "$(pid_of dec)"
wait_status '.partitions[1].breaker.open == true and .partitions[1].state == "up"'
opened=$?
"$CURL" -sS --max-time 10 --unix-socket "$api" http://duet/health >"$tmp/breaker-health.json"
stream "Tale 1: $LONG" 96 "$tmp/breaker.st" &
spid=$!
wait_status '.partitions[1].breaker.open == false and .health.ok == true'
closed=$?
wait "$spid"
[ $opened -eq 0 ] && [ $closed -eq 0 ] &&
	grep -q 'circuit breaker open after 2 failures in a minute' "$tmp/breaker-health.json" &&
	grep -q 'partition dec: circuit breaker open' "$tmp/breaker.out" &&
	grep -q 'partition dec: circuit breaker closed' "$tmp/breaker.out" &&
	[ "$(stream_text "$tmp/breaker.st")" = "$(cat "$tmp/want1")" ]
result $? "breaker: opens after 2 deaths (/health says so), closes on a canary; the waiting request is served" "$tmp/breaker.out"
stop
[ $rc -eq 0 ] && clean_log "$tmp/breaker.out"
result $? "breaker: exit 0 (got $rc), no [alert]" "$tmp/breaker.out"

tap_done
