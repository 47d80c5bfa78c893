#!/bin/sh
# Integration: a split configuration (one prefill, one decode partition over
# shm).  The supervisor connects the partitions' KV transfer endpoints
# (descriptors and memfds relayed in XFER_DESC frames) and /v1/status shows
# the link up; a killed decode worker takes the link down (and /health to
# 503) and its restart brings it back.  Requests through the split are
# tested in split_smoke.sh and split_faults.sh.  Needs curl and jq.
# Usage: disagg_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
CURL=/usr/bin/curl
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-disagg-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

if [ ! -x "$CURL" ] || [ -z "$JQ" ]; then
	skip "split configuration: curl or jq not found (make test installs them)"
	tap_done
	exit
fi

api="$tmp/api.sock"
cat >"$tmp/duet.cfg" <<EOF
model = { path = "$(pwd)/$BUILD/models/duet-tiny.gguf"; };
kv = { memory_mb = 64; };
transport = { driver = "shm"; };
partitions = (
    { name = "pre"; role = "prefill"; threads = 1; },
    { name = "dec"; role = "decode"; threads = 1; }
);
api = { socket_dir = "$tmp"; canary_interval_ms = 300; };
EOF
status() { "$CURL" -sS --max-time 10 --unix-socket "$api" http://duet/v1/status 2>/dev/null; }
wait_status() { # jq expression, up to 20 s
	for _ in $(seq 1 200); do
		status | jq_true "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

"$DUETD" -c "$tmp/duet.cfg" >"$tmp/run.out" 2>&1 &
pid=$!

# 1. The link comes up once both workers are ready (and the daemon is up and healthy:
#    a worker that dies before that stops the start-up by design).
wait_status '.state == "up" and .health.ok == true and (.links | length == 1)
	and .links[0].prefill == "pre" and .links[0].decode == "dec"
	and .links[0].transport == "shm" and .links[0].state == "up"'
result $? "prefill -> decode KV link up over shm in /v1/status" "$tmp/run.out"

# 2. Both ends report it; the decode pool is writable by peers.
grep -q 'partition dec: KV transfer over shm (.*writable by peers)' "$tmp/run.out" &&
	grep -q 'partition pre: KV link to partition dec up' "$tmp/run.out" &&
	grep -q 'supervisor: KV link pre -> dec up' "$tmp/run.out"
result $? "both workers connected their endpoints; the supervisor saw both" "$tmp/run.out"

# 3. kill -9 of the decode worker: the link goes down, then up again with the new worker.
dec=$(status | "$JQ" '.partitions[] | select(.name == "dec") | .pid')
[ -n "$dec" ] && kill -KILL "$dec"
for _ in $(seq 1 200); do
	[ "$(grep -c 'supervisor: KV link pre -> dec up' "$tmp/run.out")" -ge 2 ] && break
	sleep 0.1
done
new=$(status | "$JQ" '.partitions[] | select(.name == "dec") | .pid')
wait_status '.links[0].state == "up"' && [ "$(grep -c 'supervisor: KV link pre -> dec up' "$tmp/run.out")" -ge 2 ] &&
	[ -n "$new" ] && [ "$new" != "$dec" ]
result $? "decode worker $dec killed: the link came back with worker $new" "$tmp/run.out"

# 4. Requests are served through the link again.
wait_status '.health.ok == true'
code=$("$CURL" -sS --max-time 10 --unix-socket "$api" -o "$tmp/body" -w '%{http_code}' \
	-H 'Content-Type: application/json' \
	--data-binary '{"model":"m","prompt":"Hello","max_tokens":4}' http://duet/v1/completions)
[ "$code" = 200 ] && jq_true '.usage.completion_tokens == 4' "$tmp/body" >/dev/null
result $? "a completion is served (status $code)" "$tmp/body"

# 5. SIGTERM: exit 0, no [alert].
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] && clean_log "$tmp/run.out"
result $? "SIGTERM: exit 0 (got $rc), no [alert]" "$tmp/run.out"

tap_done
