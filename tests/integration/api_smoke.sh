#!/bin/sh
# Integration: duetd as the supervisor, serving the OpenAI API on api.sock.
# Starts "$BUILD/bin/duetd -c <etc/duet.cfg with a temp socket_dir>", then
# talks to it with curl --unix-socket.  Prints TAP-style "ok N - what" /
# "not ok N - what" lines; exits non-zero on any failure.  Every check is
# skipped when /usr/bin/curl is missing (nothing is installed).
# Usage: api_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
GEN="$BUILD/bin/duet-generate"
CURL=/usr/bin/curl
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-api-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

CHECKS="health completion stream badparam chat metrics restart restarted-serves shutdown"
if [ ! -x "$CURL" ]; then
	for c in $CHECKS; do
		skip "$c: /usr/bin/curl not found"
	done
	echo "1..$n"
	exit 0
fi

sock="$tmp/api.sock"
api() { # api METHOD PATH [BODY] -> body on stdout, status in $tmp/code
	if [ $# -ge 3 ]; then
		"$CURL" -sS -N --max-time 10 --unix-socket "$sock" -o "$tmp/body" \
			-w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
			--data-binary "$3" "http://duet$2" >"$tmp/code" 2>>"$tmp/curl.err"
	else
		"$CURL" -sS -N --max-time 10 --unix-socket "$sock" -o "$tmp/body" \
			-w '%{http_code}' -X "$1" "http://duet$2" >"$tmp/code" 2>>"$tmp/curl.err"
	fi
	cat "$tmp/body"
}
code() { cat "$tmp/code"; }
# The JSON string value of "text" (as written, escapes kept).
text_of() { sed -n 's/.*"text": *"\(\([^"\\]\|\\.\)*\)".*/\1/p' | head -n 1; }

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

# 1. Health once every worker is READY and its first canary went through.
for _ in $(seq 1 100); do
	api GET /health >/dev/null
	[ "$(code)" = 200 ] && break
	sleep 0.1
done
[ $up -eq 1 ] && [ "$(code)" = 200 ]
result $? "GET /health answers 200 once the workers are ready (up=$up)" "$tmp/run.out"

# 2. A greedy completion gives the text duet-generate gives.
want=$("$GEN" -m "$model" -p Hello -n 8 --json 2>/dev/null | text_of)
got=$(api POST /v1/completions '{"model":"duet-tiny","prompt":"Hello","max_tokens":8,"temperature":0}' |
	text_of)
cp "$tmp/body" "$tmp/completion.json"
[ "$(code)" = 200 ] && [ -n "$want" ] && [ "$got" = "$want" ] &&
	grep -q '"finish_reason":"length"' "$tmp/completion.json" &&
	grep -q '"completion_tokens":8' "$tmp/completion.json"
result $? "POST /v1/completions matches duet-generate ('$got' = '$want')" "$tmp/completion.json"

# 3. The streamed version: SSE chunks, finish_reason, usage, then [DONE].
api POST /v1/completions \
	'{"model":"duet-tiny","prompt":"Hello","max_tokens":8,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' \
	>"$tmp/stream.txt"
[ "$(code)" = 200 ] && [ "$(grep -v '^$' "$tmp/stream.txt" | tail -n 1)" = "data: [DONE]" ] &&
	grep -q '"finish_reason":"length"' "$tmp/stream.txt" &&
	grep -q '"completion_tokens":8' "$tmp/stream.txt"
result $? "streamed /v1/completions ends with data: [DONE]" "$tmp/stream.txt"

# 4. A bad request names its field.
api POST /v1/completions '{"model":"duet-tiny","prompt":"Hello","temperature":9}' >"$tmp/bad.json"
[ "$(code)" = 400 ] && grep -q '"param":"temperature"' "$tmp/bad.json"
result $? "temperature 9 is a 400 naming temperature" "$tmp/bad.json"

# 5. Chat, models and tokenize answer in their shapes.
api POST /v1/chat/completions \
	'{"model":"duet-tiny","messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0}' >"$tmp/chat.json"
c1=$(code)
api GET /v1/models >"$tmp/models.json"
c2=$(code)
api POST /v1/tokenize '{"prompt":"Hello"}' >"$tmp/tok.json"
c3=$(code)
cat "$tmp/chat.json" "$tmp/models.json" "$tmp/tok.json" >"$tmp/misc.json"
[ "$c1$c2$c3" = 200200200 ] && grep -q '"object":"chat.completion"' "$tmp/chat.json" &&
	grep -q '"id":"duet-tiny"' "$tmp/models.json" && grep -q '"count":7' "$tmp/tok.json"
result $? "chat completion, /v1/models and /v1/tokenize answer 200 ($c1 $c2 $c3)" "$tmp/misc.json"

# 6. Metrics count the generated tokens.
api GET /metrics >"$tmp/metrics.txt"
[ "$(code)" = 200 ] && grep -q '^duet_generation_tokens_total{partition="decode0",role="decode"} [1-9][0-9]*$' "$tmp/metrics.txt"
result $? "GET /metrics has duet_generation_tokens_total" "$tmp/metrics.txt"

# 7. A killed worker: /health goes non-200, the worker is restarted, /health is 200 again.
worker=$(pgrep -P "$pid" | head -n 1)
down=0
back=0
if [ -n "$worker" ]; then
	kill -KILL "$worker"
	for _ in $(seq 1 300); do
		api GET /health >/dev/null
		[ "$(code)" != 200 ] && down=1
		if [ $down -eq 1 ] && [ "$(code)" = 200 ]; then
			back=1
			break
		fi
		sleep 0.05
	done
fi
[ $back -eq 1 ] && grep -q "killed by signal 9" "$tmp/run.out" &&
	[ "$(pgrep -P "$pid" | head -n 1)" != "$worker" ]
result $? "kill -9 of worker ${worker:-?}: /health non-200 then 200 (down=$down back=$back)" "$tmp/run.out"
api POST /v1/completions '{"model":"duet-tiny","prompt":"Hello","max_tokens":4,"temperature":0}' >/dev/null
[ "$(code)" = 200 ]
result $? "the restarted worker serves completions" "$tmp/body"

# 8. SIGTERM: exit 0, sockets removed, nothing alarming in the log.
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] && [ ! -e "$sock" ] && [ ! -e "$tmp/admin.sock" ] &&
	grep -q "shutting down" "$tmp/run.out" && clean_log "$tmp/run.out"
result $? "SIGTERM: exit 0 (got $rc), sockets removed, no [alert]" "$tmp/run.out"

tap_done
