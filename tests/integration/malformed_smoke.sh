#!/bin/sh
# Integration: a corpus of malformed requests against the real duetd.  Each
# gets the right 4xx, an OpenAI error object and (where one field is at
# fault) that field named in "param"; after each, the daemon still answers a
# normal request.  The log must stay free of [alert] and sanitizer reports.
# Needs curl and jq (make test installs them).
# Usage: malformed_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
CURL=/usr/bin/curl
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-malformed-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

if [ ! -x "$CURL" ] || [ -z "$JQ" ]; then
	skip "malformed-request corpus: curl or jq not found (make test installs them)"
	tap_done
	exit
fi

api="$tmp/api.sock"
model="$(pwd)/$BUILD/models/duet-tiny.gguf"
sed -e "s|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$model\"|" \
	-e "s|^\([[:space:]]*socket_dir[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$tmp\"|" \
	-e "s|^\([[:space:]]*max_body_kb[[:space:]]*=[[:space:]]*\)[0-9]*|\164|" \
	-e "s|^\([[:space:]]*max_tokens[[:space:]]*=[[:space:]]*\)[0-9]*|\1512|" \
	etc/duet.cfg >"$tmp/duet.cfg"
"$DUETD" -c "$tmp/duet.cfg" >"$tmp/run.out" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
	[ -S "$api" ] && grep -q "\] duetd: up " "$tmp/run.out" && break
	sleep 0.1
done

# One normal request still served: the daemon is alive and well.
still_serves() {
	c=$("$CURL" -sS --max-time 10 --unix-socket "$api" -o /dev/null -w '%{http_code}' \
		-H 'Content-Type: application/json' \
		--data-binary '{"model":"m","prompt":"Hi","max_tokens":2}' http://duet/v1/completions)
	[ "$c" = 200 ]
}

# check WHAT STATUS PARAM (or "-" for none expected) -- curl arguments
check() {
	what=$1
	want=$2
	param=$3
	shift 3
	got=$("$CURL" -sS --max-time 10 --unix-socket "$api" -o "$tmp/body" -w '%{http_code}' "$@" \
		2>"$tmp/curl.err")
	if [ "$got" != "$want" ]; then
		echo "status $got, expected $want" >>"$tmp/body"
		not_ok "$what: $want" "$tmp/body"
		return
	fi
	if ! jq_true '.error.message | type == "string" and length > 0' "$tmp/body" >/dev/null 2>&1; then
		not_ok "$what: $want with an error object" "$tmp/body"
		return
	fi
	if [ "$param" != - ] && ! jq_true --arg p "$param" '.error.param == $p' "$tmp/body" >/dev/null; then
		not_ok "$what: $want naming $param" "$tmp/body"
		return
	fi
	if ! still_serves; then
		not_ok "$what: the daemon serves a normal request afterwards" "$tmp/run.out"
		return
	fi
	ok "$what: $want${param#-}"
}

# post WHAT STATUS PARAM PATH BODY
post() {
	check "$1" "$2" "$3" -H 'Content-Type: application/json' --data-binary "$5" "http://duet$4"
}

C=/v1/completions
H=/v1/chat/completions
P='"model":"m","prompt":"Hi"'
M='"model":"m","messages":[{"role":"user","content":"Hi"}]'

# Bad JSON.
post "empty body" 400 - $C ''
post "not JSON" 400 - $C 'hello'
post "truncated JSON" 400 - $C '{"model":"m","prompt":"Hi"'
post "trailing garbage" 400 - $C "{$P} x"
post "top level is an array" 400 - $C "[{$P}]"
post "top level is a string" 400 - $C '"prompt"'
post "duplicate keys" 400 - $C "{$P,\"prompt\":\"again\"}"
post "over-deep JSON" 400 - $C "{$P,\"x\":$(printf '[%.0s' $(seq 1 200))$(printf ']%.0s' $(seq 1 200))}"
post "invalid UTF-8 in a string" 400 - $C "$(printf '{"model":"m","prompt":"\377\376"}')"
post "NUL escape in a string" 400 prompt $C '{"model":"m","prompt":"a\u0000b"}'
# Wrong types.
post "model is a number" 400 model $C '{"model":5,"prompt":"Hi"}'
post "prompt is an object" 400 prompt $C '{"model":"m","prompt":{}}'
post "max_tokens is a string" 400 max_tokens $C "{$P,\"max_tokens\":\"8\"}"
post "temperature is a string" 400 temperature $C "{$P,\"temperature\":\"hot\"}"
post "stream is a number" 400 stream $C "{$P,\"stream\":1}"
post "stop is a number" 400 stop $C "{$P,\"stop\":7}"
post "messages is a string" 400 messages $H '{"model":"m","messages":"Hi"}'
post "content is a number" 400 "messages[0].content" $H '{"model":"m","messages":[{"role":"user","content":5}]}'
# Out of range.
post "negative max_tokens" 400 max_tokens $C "{$P,\"max_tokens\":-1}"
post "zero max_tokens" 400 max_tokens $C "{$P,\"max_tokens\":0}"
post "huge max_tokens" 400 max_tokens $C "{$P,\"max_tokens\":99999999999}"
post "max_tokens over the context" 400 max_tokens $C "{\"model\":\"m\",\"max_tokens\":512,\"prompt\":[$(yes 7 | head -n 600 | paste -sd,)]}"
post "temperature 9" 400 temperature $C "{$P,\"temperature\":9}"
post "negative top_p" 400 top_p $C "{$P,\"top_p\":-0.5}"
post "top_p zero" 400 top_p $C "{$P,\"top_p\":0}"
post "presence_penalty 3" 400 presence_penalty $C "{$P,\"presence_penalty\":3}"
post "NaN-like temperature" 400 - $C "{$P,\"temperature\":NaN}"
post "huge n" 400 n $C "{$P,\"n\":1000000}"
post "n zero" 400 n $C "{$P,\"n\":0}"
post "huge logprobs" 400 logprobs $C "{$P,\"logprobs\":1000}"
post "huge top_logprobs" 400 top_logprobs $H "{$M,\"logprobs\":true,\"top_logprobs\":100}"
post "top_logprobs without logprobs" 400 top_logprobs $H "{$M,\"top_logprobs\":2}"
post "too many stop strings" 400 stop $C "{$P,\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}"
post "empty stop string" 400 "stop[0]" $C "{$P,\"stop\":[\"\"]}"
post "logit_bias over 100" 400 logit_bias $C "{$P,\"logit_bias\":{\"5\":101}}"
post "logit_bias token not a number" 400 logit_bias $C "{$P,\"logit_bias\":{\"abc\":1}}"
post "logit_bias token out of vocabulary" 400 logit_bias $C "{$P,\"logit_bias\":{\"99999\":1}}"
# Out-of-vocabulary and empty token prompts.
post "prompt token out of vocabulary" 400 prompt $C '{"model":"m","prompt":[1,2,999999]}'
post "negative prompt token" 400 "prompt[1]" $C '{"model":"m","prompt":[1,-2]}'
post "empty token prompt" 400 prompt $C '{"model":"m","prompt":[]}'
post "detokenize out of vocabulary" 400 tokens /v1/detokenize '{"model":"m","tokens":[5,99999]}'
# Chat structure.
post "no messages" 400 messages $H '{"model":"m","messages":[]}'
post "bad role" 400 "messages[0].role" $H '{"model":"m","messages":[{"role":"wizard","content":"Hi"}]}'
post "message without role" 400 "messages[0].role" $H '{"model":"m","messages":[{"content":"Hi"}]}'
post "tool calls" 400 tools $H "{$M,\"tools\":[{\"type\":\"function\"}]}"
# Missing fields, unsupported features.
post "no model" 400 model $C '{"prompt":"Hi"}'
post "no prompt" 400 prompt $C '{"model":"m"}'
post "echo" 400 echo $C "{$P,\"echo\":true}"
post "best_of 3" 400 best_of $C "{$P,\"best_of\":3}"
# Sizes, routes, methods, headers.
big=$(head -c 70000 /dev/zero | tr '\0' 'a')
printf '{"model":"m","prompt":"%s"}' "$big" >"$tmp/big.json"
check "oversized body (70 KB over a 64 KB limit)" 413 - -H 'Content-Type: application/json' \
	--data-binary @"$tmp/big.json" http://duet$C
check "unknown route" 404 - http://duet/v1/nothing
check "GET on a POST route" 405 - http://duet$C
check "DELETE on /health" 405 - -X DELETE http://duet/health
check "a 20 KB header" 431 - -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' 'b')" http://duet/health
hdrs=
i=0
while [ $i -lt 80 ]; do
	hdrs="$hdrs -H X-H$i:v"
	i=$((i + 1))
done
# shellcheck disable=SC2086
check "80 header lines" 431 - $hdrs http://duet/health
check "admin route on api.sock" 403 - -X POST http://duet/admin/shutdown

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] && clean_log "$tmp/run.out"
result $? "after the corpus: SIGTERM exits 0 (got $rc), no [alert] or sanitizer report" "$tmp/run.out"

tap_done
