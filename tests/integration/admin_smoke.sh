#!/bin/sh
# Integration: the operator side of duetd (docs/api.md) — /v1/status, the
# admin routes on admin.sock, their authorization by peer credentials and
# the audit log, events, cancellation (by an operator and by a client that
# goes away), 64 concurrent streams, reload and shutdown.
# Needs curl and jq (make test installs them); skips every check without.
# Usage: admin_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
CURL=/usr/bin/curl
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-admin-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	[ -n "${DUET_KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

if [ ! -x "$CURL" ] || [ -z "$JQ" ]; then
	skip "admin API checks: curl or jq not found (make test installs them)"
	tap_done
	exit
fi

api="$tmp/api.sock"
adm="$tmp/admin.sock"
# req SOCKET METHOD PATH [BODY]: body on stdout, HTTP status in $tmp/code
req() {
	s=$1
	m=$2
	p=$3
	shift 3
	if [ $# -ge 1 ]; then
		"$CURL" -sS -N --max-time 20 --unix-socket "$s" -o "$tmp/body" -w '%{http_code}' \
			-X "$m" -H 'Content-Type: application/json' --data-binary "$1" \
			"http://duet$p" >"$tmp/code" 2>>"$tmp/curl.err"
	else
		"$CURL" -sS -N --max-time 20 --unix-socket "$s" -o "$tmp/body" -w '%{http_code}' \
			-X "$m" "http://duet$p" >"$tmp/code" 2>>"$tmp/curl.err"
	fi
	cat "$tmp/body"
}
code() { cat "$tmp/code"; }
status() { req "$api" GET /v1/status; }
# Poll until the jq expression is true on /v1/status (up to 20 s).
wait_status() {
	for _ in $(seq 1 200); do
		status | jq_true "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

model="$(pwd)/$BUILD/models/duet-tiny.gguf"
chmod 0755 "$tmp"
sed -e "s|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$model\"|" \
	-e "s|^\([[:space:]]*socket_dir[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$tmp\"|" \
	-e "s|^\([[:space:]]*canary_interval_ms[[:space:]]*=[[:space:]]*\)[0-9]*|\1300|" \
	-e "s|^\([[:space:]]*cpus[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"0\"|" \
	-e "s|^\([[:space:]]*admin_group[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"\"|" \
	-e "s|^\([[:space:]]*tenants[[:space:]]*=[[:space:]]*\)( );|\1( { uid = 0; tenant = \"ops\"; }, { uid = 65534; tenant = \"ops\"; } );|" \
	etc/duet.cfg >"$tmp/duet.cfg"

# Every step waits 3 ms: requests stay in flight long enough to act on them.
DUET_TEST_STEP_DELAY_US=3000 "$DUETD" -c "$tmp/duet.cfg" >"$tmp/run.out" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
	[ -S "$api" ] && grep -q "\] duetd: up " "$tmp/run.out" && break
	sleep 0.1
done

# 1. /v1/status: the contract's shape; admin false on api.sock, true on admin.sock.
wait_status '.health.ok == true'
status >"$tmp/status.json"
req "$adm" GET /v1/status >"$tmp/status-admin.json"
jq_true '.state == "up" and .admin == false and .name == "duet" and .model == "duet-tiny"
	and (.partitions | length) == 2 and .partitions[0].name == "prefill0"
	and .partitions[0].role == "prefill" and .partitions[1].name == "decode0"
	and .partitions[1].role == "decode" and all(.partitions[]; .state == "up"
	and .kv.total > 0 and .pid > 0 and .breaker.open == false)
	and (.links | length) == 1 and .links[0].state == "up" and .links[0].transport == "shm"
	and .slo.ttft_ms == 1000 and (.window.window_s == 60)
	and (.totals | has("requests"))' "$tmp/status.json" >/dev/null &&
	jq_true '.admin == true' "$tmp/status-admin.json" >/dev/null
result $? "/v1/status has the documented shape; admin only on admin.sock" "$tmp/status.json"

# 1b. The worker process, every thread of it, runs on the partition's CPU set ("0").
wpid=$(status | "$JQ" '.partitions[0].pid')
bad=0
for t in /proc/"$wpid"/task/*; do
	grep -q '^Cpus_allowed_list:[[:space:]]*0$' "$t/status" || bad=$((bad + 1))
done
[ -d "/proc/$wpid" ] && [ $bad -eq 0 ]
result $? "every thread of worker $wpid is pinned to the partition's cpus \"0\" ($bad not)" "$tmp/run.out"

# 2. Health is 200 only after the canary went through; the canary does not count as a request.
req "$api" GET /health >/dev/null
[ "$(code)" = 200 ] && jq_true '.totals.requests == 0' "$tmp/status.json" >/dev/null
result $? "/health 200 after the first canary; canaries are not counted as requests" "$tmp/body"

# 3. Admin routes are refused on api.sock (403) and audited.
req "$api" POST /admin/drain '{"partition":"decode0"}' >"$tmp/denied.json"
[ "$(code)" = 403 ] && jq_true '.error.code == "PERMISSION"' "$tmp/denied.json" >/dev/null &&
	grep -q 'socket=api POST /admin/drain 403 denied' "$tmp/audit.log"
result $? "POST /admin/drain on api.sock: 403 PERMISSION, audited" "$tmp/denied.json"

# 4. Drain the (only) decode partition: state drained, new requests 503; undrain: served again.
req "$adm" POST /admin/drain '{"partition":"decode0"}' >"$tmp/drain.json"
c1=$(code)
wait_status '.partitions[1].state == "drained"'
d=$?
req "$api" POST /v1/completions '{"model":"m","prompt":"Hi","max_tokens":2}' >"$tmp/drained.json"
c2=$(code)
req "$adm" POST /admin/undrain '{"partition":"decode0"}' >/dev/null
c3=$(code)
req "$api" POST /v1/completions '{"model":"m","prompt":"Hi","max_tokens":2}' >/dev/null
c4=$(code)
[ "$c1$d$c2$c3$c4" = 2000503200200 ] && grep -q 'POST /admin/drain 200 ok partition=decode0' "$tmp/audit.log"
result $? "drain -> drained, 503 for new requests; undrain -> 200 ($c1 $d $c2 $c3 $c4)" "$tmp/drained.json"
req "$adm" POST /admin/drain '{"partition":"nope"}' >"$tmp/nope.json"
c1=$(code)
req "$adm" POST /admin/drain '{"part":"cpu0"}' >"$tmp/nopart.json"
c2=$(code)
[ "$c1$c2" = 404400 ] && jq_true '.error.param == null' "$tmp/nope.json" >/dev/null &&
	grep -q 'partition' "$tmp/nopart.json"
result $? "drain of an unknown partition 404, without one 400 ($c1 $c2)" "$tmp/nopart.json"

# 5. An operator cancels a running stream: it appears in /admin/requests, the
#    client gets an error frame, the request ends "cancelled".
"$CURL" -sS -N --max-time 30 --unix-socket "$api" -H 'Content-Type: application/json' \
	--data-binary '{"model":"m","prompt":"Once","max_tokens":900,"stream":true}' \
	http://duet/v1/completions >"$tmp/cancelled.txt" 2>&1 &
cpid=$!
id=
for _ in $(seq 1 100); do
	id=$(req "$adm" GET /admin/requests | "$JQ" -r '[.requests[] | select(.state == "decoding")][0].id // empty')
	[ -n "$id" ] && break
	sleep 0.1
done
req "$adm" POST "/admin/requests/$id/cancel" >"$tmp/cancel.json"
c1=$(code)
wait "$cpid"
req "$adm" POST "/admin/requests/$id/cancel" >/dev/null
c2=$(code)
req "$adm" GET /admin/requests >"$tmp/requests.json"
[ -n "$id" ] && [ "$c1$c2" = 200404 ] && grep -q '"code":"CANCELLED"' "$tmp/cancelled.txt" &&
	jq_true --arg id "$id" '[.requests[] | select(.id == $id)][0].state == "cancelled"' \
		"$tmp/requests.json" >/dev/null
result $? "POST /admin/requests/$id/cancel stops the stream; a second cancel is 404 ($c1 $c2)" \
	"$tmp/cancelled.txt"

# 6. A client that goes away mid-stream: its request is cancelled and its KV blocks freed.
wait_status '.partitions[0].running == 0 and .partitions[0].waiting == 0'
sleep 0.5 # one more STATS frame from the idle worker
used0=$(status | "$JQ" '.partitions[0].kv.used')
"$CURL" -sS -N --max-time 1 --unix-socket "$api" -H 'Content-Type: application/json' \
	--data-binary '{"model":"m","prompt":"A long story","max_tokens":900,"stream":true}' \
	http://duet/v1/completions >/dev/null 2>&1
wait_status '.partitions[0].running == 0 and .partitions[0].kv.used <= '"${used0:-0}"
freed=$?
status | jq_true '[.requests[] | select(.state == "cancelled")] | length >= 2' >/dev/null
[ $freed -eq 0 ] && [ $? -eq 0 ]
result $? "a client gone mid-stream: cancelled, KV used back to $used0 blocks" "$tmp/run.out"

# 7. 64 concurrent streaming clients: every stream complete, in order, gap-free.
req "$api" POST /v1/completions '{"model":"m","prompt":"Hello","max_tokens":12,"temperature":0}' |
	"$JQ" -r '.choices[0].text' >"$tmp/want.txt"
i=0
clients=
while [ $i -lt 64 ]; do
	"$CURL" -sS -N --max-time 60 --unix-socket "$api" -H 'Content-Type: application/json' \
		--data-binary '{"model":"m","prompt":"Hello","max_tokens":12,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' \
		http://duet/v1/completions >"$tmp/s$i.txt" 2>&1 &
	clients="$clients $!"
	i=$((i + 1))
done
for c in $clients; do wait "$c"; done
good=0
i=0
while [ $i -lt 64 ]; do
	f="$tmp/s$i.txt"
	sed -n 's/^data: \({.*\)$/\1/p' "$f" | "$JQ" -j 'select(.choices | length > 0) | .choices[0].text' \
		>"$tmp/got$i.txt" 2>/dev/null
	printf '\n' >>"$tmp/got$i.txt"
	if cmp -s "$tmp/got$i.txt" "$tmp/want.txt" && [ "$(grep -v '^$' "$f" | tail -n 1)" = "data: [DONE]" ] &&
		grep -q '"completion_tokens":12' "$f"; then
		good=$((good + 1))
	else
		cp "$f" "$tmp/bad-stream.txt"
	fi
	i=$((i + 1))
done
[ $good -eq 64 ]
result $? "64 concurrent streams: $good/64 complete and equal to the unstreamed text" "$tmp/bad-stream.txt"

# 8. n = 3 streams: three indexed choices, each finished once.
req "$api" POST /v1/completions '{"model":"m","prompt":"Hi","max_tokens":4,"n":3,"stream":true}' >"$tmp/n3.txt"
sed -n 's/^data: \({.*\)$/\1/p' "$tmp/n3.txt" |
	"$JQ" -s -e '[.[] | .choices[] | select(.finish_reason != null) | .index] | sort == [0,1,2]' >/dev/null
result $? "n = 3 streamed: one finish_reason for each of the indices 0, 1, 2" "$tmp/n3.txt"

# 8b. Chat, streamed and not, gives the same greedy text.
chat='"model":"m","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":24,"temperature":0'
req "$api" POST /v1/chat/completions "{$chat}" | "$JQ" -r '.choices[0].message.content' >"$tmp/chat-want.txt"
req "$api" POST /v1/chat/completions "{$chat,\"stream\":true}" >"$tmp/chat-stream.txt"
sed -n 's/^data: \({.*\)$/\1/p' "$tmp/chat-stream.txt" |
	"$JQ" -j '.choices[0].delta.content // empty' >"$tmp/chat-got.txt"
printf '\n' >>"$tmp/chat-got.txt"
[ -s "$tmp/chat-want.txt" ] && cmp -s "$tmp/chat-want.txt" "$tmp/chat-got.txt" &&
	[ "$(grep -v '^$' "$tmp/chat-stream.txt" | tail -n 1)" = "data: [DONE]" ]
result $? "chat completion: the streamed deltas add up to the unstreamed message" "$tmp/chat-stream.txt"

# 9. The audit log and the events.
"$CURL" -sS -N --max-time 2 --unix-socket "$adm" http://duet/admin/events >"$tmp/events.txt" 2>/dev/null
grep -q '^event: worker_start$' "$tmp/events.txt" && grep -q '^event: drain$' "$tmp/events.txt" &&
	grep -q '"type":"cancel"' "$tmp/events.txt" &&
	grep -q 'uid=0 gid=0 .* socket=admin POST /admin/requests/.*/cancel 200 ok' "$tmp/audit.log"
result $? "/admin/events replays worker_start, drain and cancel; the audit log has uid, route, outcome" \
	"$tmp/events.txt"

# 10. Another uid: refused by the socket's mode, and by the daemon when the mode would let it in.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
	as_nobody "$CURL" -sS --max-time 5 --unix-socket "$adm" http://duet/admin/requests \
		>"$tmp/nobody1.txt" 2>&1
	rc1=$?
	chmod 0666 "$adm"
	as_nobody "$CURL" -sS --max-time 5 --unix-socket "$adm" -w '%{http_code}' -X POST \
		http://duet/admin/shutdown >"$tmp/nobody2.txt" 2>&1
	chmod 0660 "$adm"
	[ $rc1 -ne 0 ] && grep -q '403$' "$tmp/nobody2.txt" && grep -q 'uid 65534 is not allowed' "$tmp/nobody2.txt" &&
		grep -q 'uid=65534 .*POST /admin/shutdown 403 denied: not authorized' "$tmp/audit.log" &&
		kill -0 "$pid"
	result $? "uid 65534: connect refused by the socket mode; with mode 0666 a 403, audited, daemon still up" \
		"$tmp/nobody2.txt"
else
	skip "another uid on admin.sock: needs root and setpriv"
fi

# 11. Tenants: uid 65534 shares root's cached prefix (both "ops"), uid 65533 (its own tenant) does not.
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	long='{"model":"m","prompt":"Once upon a time there was a little dog who liked to run in the park with his friends every day","max_tokens":1}'
	chmod 0666 "$api"
	req "$api" POST /v1/completions "$long" >/dev/null
	setpriv --reuid=65534 --regid=65534 --clear-groups "$CURL" -sS --max-time 10 --unix-socket "$api" \
		-H 'Content-Type: application/json' --data-binary "$long" http://duet/v1/completions >"$tmp/t1.json"
	setpriv --reuid=65533 --regid=65533 --clear-groups "$CURL" -sS --max-time 10 --unix-socket "$api" \
		-H 'Content-Type: application/json' --data-binary "$long" http://duet/v1/completions >"$tmp/t2.json"
	chmod 0660 "$api"
	cat "$tmp/t1.json" "$tmp/t2.json" >"$tmp/tenants.json"
	jq_true '.usage.prompt_tokens_details.cached_tokens > 0' "$tmp/t1.json" >/dev/null &&
		jq_true '.usage.prompt_tokens_details.cached_tokens == 0' "$tmp/t2.json" >/dev/null &&
		req "$adm" GET /admin/requests | jq_true '[.requests[] | .tenant] | (index("ops") != null) and (index("uid:65533") != null)' >/dev/null
	result $? "api.tenants: uid 65534 reuses the ops tenant's cached prefix, uid 65533 does not" "$tmp/tenants.json"
else
	skip "tenants: needs root and setpriv"
fi

# 12. Reload: what can change applies, the rest is named; a broken file is a 400 naming it.
sed -e "s|^\([[:space:]]*ttft_ms[[:space:]]*=[[:space:]]*\)[0-9]*|\1777|" \
	-e "s|^\([[:space:]]*max_seqs[[:space:]]*=[[:space:]]*\)[0-9]*|\132|" \
	"$tmp/duet.cfg" >"$tmp/next.cfg" && cp "$tmp/next.cfg" "$tmp/duet.cfg"
req "$adm" POST /admin/reload >"$tmp/reload.json"
c1=$(code)
status >"$tmp/status2.json"
sed -i 's|^\([[:space:]]*block_tokens[[:space:]]*=[[:space:]]*\)[0-9]*|\1"x"|' "$tmp/duet.cfg"
req "$adm" POST /admin/reload >"$tmp/reload-bad.json"
c2=$(code)
[ "$c1$c2" = 200400 ] && jq_true '(.applied | index("slo")) and (.rejected | index("partitions"))' \
	"$tmp/reload.json" >/dev/null && jq_true '.slo.ttft_ms == 777' "$tmp/status2.json" >/dev/null &&
	grep -q 'duet.cfg:[0-9]*: .*block_tokens' "$tmp/reload-bad.json"
result $? "reload applies slo, names partitions as needing a restart; a broken file is 400 ($c1 $c2)" \
	"$tmp/reload-bad.json"

# 13. Metrics: prefix-cache counters and the latency histograms.
req "$api" GET /metrics >"$tmp/metrics.txt"
# Prompts are computed (and cached) on prefill0, tokens stream from decode0.
grep -q '^duet_prefix_cache_queries_total{partition="prefill0",role="prefill"} [1-9]' "$tmp/metrics.txt" &&
	grep -q '^duet_time_to_first_token_seconds_count{partition="decode0",role="decode"} [1-9]' "$tmp/metrics.txt" &&
	grep -q '^duet_request_decode_time_seconds_count{partition="decode0",role="decode"} [1-9]' "$tmp/metrics.txt" &&
	grep -q '^duet_request_queue_time_seconds_count{partition="prefill0",role="prefill"} [1-9]' "$tmp/metrics.txt" &&
	grep -q '^duet_request_prefill_time_seconds_count{partition="prefill0",role="prefill"} [1-9]' "$tmp/metrics.txt" &&
	grep -q '^duet_kv_transfer_bytes_total{partition="prefill0",role="prefill",transport="shm"} [1-9]' "$tmp/metrics.txt"
result $? "/metrics counts prefix-cache queries and observes TTFT, queue, prefill, decode and KV transfers" "$tmp/metrics.txt"

# 14. Finished requests carry their phases (the worker's clock) and the wall-clock "now" is exact.
req "$adm" GET /admin/requests >"$tmp/phases.json"
status >"$tmp/status3.json"
jq_true '[.requests[] | select(.state == "done")][0] | (.queue_ms >= 0) and (.prefill_ms >= 0)
	and (.decode_ms >= 0) and (.e2e_ms >= .prefill_ms)' "$tmp/phases.json" >/dev/null &&
	jq_true --arg now "$(date +%s)" '(.now - ($now | tonumber)) | fabs < 5' "$tmp/status3.json" >/dev/null
result $? "finished requests have queue, prefill and decode times; /v1/status now is the wall clock" \
	"$tmp/phases.json"

# 15. POST /admin/shutdown: 202, drain, exit 0, sockets gone, no [alert].
req "$adm" POST /admin/shutdown >"$tmp/shutdown.json"
c1=$(code)
wait "$pid"
rc=$?
pid=
[ "$c1" = 202 ] && [ $rc -eq 0 ] && [ ! -e "$api" ] && [ ! -e "$adm" ] && clean_log "$tmp/run.out"
result $? "POST /admin/shutdown: 202, exit 0 (got $rc), sockets removed, no [alert]" "$tmp/run.out"

tap_done
