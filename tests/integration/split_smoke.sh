#!/bin/sh
# Integration: requests split between a prefill and a decode partition.
#
# For a mixed partition, then one prefill + one decode partition over shm,
# then over tcp: greedy completions (a short prompt, one spanning several
# KV blocks and prefill chunks, shared prefixes) give exactly duet-generate's
# text, unstreamed and as 16 concurrent streams; /v1/status counts the
# transfers on the link and reports each request's queue, prefill, transfer
# and decode times; /metrics has the transfer families labelled by
# transport; with ../shared, stories260K's golden texts come through the
# split.  Needs curl and jq.
# Usage: split_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
GEN="$BUILD/bin/duet-generate"
MODEL="$(pwd)/$BUILD/models/duet-tiny.gguf"
SHARED=${DUET_SHARED:-../shared}
CURL=/usr/bin/curl
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-split-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

if [ ! -x "$CURL" ] || [ -z "$JQ" ]; then
	skip "split requests: curl or jq not found (make test installs them)"
	tap_done
	exit
fi

api="$tmp/api.sock"
printf 'duet split test key 0123456789abcdef\n' >"$tmp/psk"
chmod 600 "$tmp/psk"

# config NAME PARTITIONS TRANSPORT [MODEL KVTYPE]
config() {
	cat >"$tmp/$1.cfg" <<EOF
model = { path = "${4:-$MODEL}"; };
kv = { memory_mb = 64; dtype = "${5:-f16}"; };
transport = { driver = "$3"; psk_file = "$tmp/psk"; };
partitions = ( $2 );
api = { socket_dir = "$tmp"; canary_interval_ms = 300; };
EOF
}
MIXED='{ name = "mix"; role = "mixed"; threads = 1; }'
# Small prefill steps: long prompts take several chunks, their KV several writes per layer.
SPLIT='{ name = "pre"; role = "prefill"; threads = 1; max_batch_tokens = 32; max_seqs = 8; },
       { name = "dec"; role = "decode"; threads = 1; }'

status() { "$CURL" -sS --max-time 10 --unix-socket "$api" http://duet/v1/status 2>/dev/null; }
wait_status() { # jq expression, up to 30 s
	for _ in $(seq 1 300); do
		status | jq_true "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
start() { # config name
	"$DUETD" -c "$tmp/$1.cfg" >"$tmp/$1.out" 2>&1 &
	pid=$!
	wait_status '.state == "up" and .health.ok == true and ([.links[] | select(.state != "up")] | length == 0)'
}
complete() { # prompt max_tokens -> the completion's text
	body=$("$JQ" -cn --arg p "$1" --argjson n "$2" \
		'{model:"m",prompt:$p,max_tokens:$n,temperature:0}')
	"$CURL" -sS --max-time 30 --unix-socket "$api" -H 'Content-Type: application/json' \
		--data-binary "$body" http://duet/v1/completions | "$JQ" -r '.choices[0].text'
}
stream() { # prompt max_tokens out-file
	body=$("$JQ" -cn --arg p "$1" --argjson n "$2" \
		'{model:"m",prompt:$p,max_tokens:$n,temperature:0,stream:true}')
	"$CURL" -sS -N --max-time 60 --unix-socket "$api" -H 'Content-Type: application/json' \
		--data-binary "$body" http://duet/v1/completions >"$3" 2>&1
}
stream_text() { # SSE file -> the concatenated text deltas
	sed -n 's/^data: //p' "$1" | grep -v '^\[DONE\]$' | "$JQ" -rj '.choices[0].text // empty'
}

# The prompts and duet-generate's greedy text for each (the reference).
LONG="Once upon a time there was a little robot who lived in a big house with a cat, a dog and a very old clock that sang every hour"
i=0
for p in "Hello" "$LONG" "$LONG and" "The cat" "A dog ran to the park" "Why is the sky blue?"; do
	i=$((i + 1))
	printf '%s' "$p" >"$tmp/p$i"
	"$GEN" -m "$MODEL" -p "$p" -n 24 2>>"$tmp/gen.err" >"$tmp/want$i"
done
NP=$i
for i in $(seq 1 16); do
	printf 'Story %d: the' "$i" >"$tmp/s$i"
	"$GEN" -m "$MODEL" -p "Story $i: the" -n 32 2>>"$tmp/gen.err" >"$tmp/swant$i"
done

for mode in mixed shm tcp; do
	if [ $mode = mixed ]; then config $mode "$MIXED" shm; else config $mode "$SPLIT" $mode; fi
	start $mode
	result $? "$mode: up and healthy$([ $mode != mixed ] && echo ', link pre -> dec up')" "$tmp/$mode.out"

	# 1. Unstreamed greedy completions equal duet-generate's.
	fails=0
	for i in $(seq 1 $NP); do
		got=$(complete "$(cat "$tmp/p$i")" 24)
		if [ "$got" != "$(cat "$tmp/want$i")" ]; then
			fails=$((fails + 1))
			printf 'prompt %s\nwant: %s\ngot:  %s\n' "$(cat "$tmp/p$i")" "$(cat "$tmp/want$i")" "$got" >>"$tmp/$mode.diff"
		fi
	done
	[ $fails -eq 0 ]
	result $? "$mode: $NP greedy completions equal duet-generate ($fails differ)" "$tmp/$mode.diff"

	# 2. 16 concurrent streams, each equal to its reference, each ending once with [DONE].
	pids=
	for i in $(seq 1 16); do
		stream "$(cat "$tmp/s$i")" 32 "$tmp/$mode.st$i" &
		pids="$pids $!"
	done
	for j in $pids; do wait "$j"; done
	fails=0
	for i in $(seq 1 16); do
		got=$(stream_text "$tmp/$mode.st$i")
		if [ "$got" != "$(cat "$tmp/swant$i")" ] ||
			[ "$(grep -c '^data: \[DONE\]' "$tmp/$mode.st$i")" != 1 ]; then
			fails=$((fails + 1))
			cat "$tmp/$mode.st$i" >>"$tmp/$mode.sdiff"
		fi
	done
	[ $fails -eq 0 ]
	result $? "$mode: 16 concurrent streams equal duet-generate, one [DONE] each ($fails differ)" "$tmp/$mode.sdiff"

	# 2b. The answer says where its time went: "timings" in the usage chunk of a stream
	#     and in a whole body, naming the partitions (the prefill one only when split).
	body=$("$JQ" -cn --arg p "$LONG" '{model:"m",prompt:$p,max_tokens:12,temperature:0,
		stream:true,stream_options:{include_usage:true}}')
	"$CURL" -sS -N --max-time 60 --unix-socket "$api" --data-binary "$body" \
		http://duet/v1/completions | sed -n 's/^data: //p' | grep '"timings"' >"$tmp/$mode.timings"
	complete_body=$("$JQ" -cn --arg p "$LONG" '{model:"m",prompt:$p,max_tokens:12,temperature:0}')
	"$CURL" -sS --max-time 30 --unix-socket "$api" --data-binary "$complete_body" \
		http://duet/v1/completions >>"$tmp/$mode.timings"
	if [ $mode = mixed ]; then
		where='.partition == "mix" and .transfer_ms == null and (has("prefill_partition") | not)'
	else
		where='.partition == "dec" and .prefill_partition == "pre" and .transfer_ms >= 0'
	fi
	"$JQ" -s '.' "$tmp/$mode.timings" | jq_true "length == 2 and all(.[]; .usage.completion_tokens == 12
		and (.timings | length == 1) and (.timings[0] | .index == 0 and $where
			and .queue_ms >= 0 and .prefill_ms > 0 and .decode_ms > 0 and .tpot_ms > 0
			and .ttft_ms >= .prefill_ms and .decode_ms >= 10 * .tpot_ms))" >/dev/null
	result $? "$mode: stream and body carry the server's phase times in \"timings\"" "$tmp/$mode.timings"

	if [ $mode != mixed ]; then
		# 3. The link counted every request's transfer; the phases add up to the latency.
		nreq=$((NP + 16))
		wait_status ".links[0].transfers >= $nreq"
		status >"$tmp/$mode.status"
		jq_true ".links[0].transfers >= $nreq and .links[0].bytes > 0 and .links[0].failures == 0
			and .links[0].transport == \"$mode\" and .links[0].gbps > 0" "$tmp/$mode.status" >/dev/null
		result $? "$mode: /v1/status counts $nreq transfers on the link, no failures" "$tmp/$mode.status"
		jq_true '[.requests[] | select(.state == "done")] | length > 0 and all(
			.prefill_partition == "pre" and .partition == "dec" and .transfer_ms != null
			and .queue_ms != null and .prefill_ms != null and .decode_ms != null
			and (.queue_ms + .prefill_ms + .transfer_ms + .decode_ms) <= .e2e_ms + 1)' \
			"$tmp/$mode.status" >/dev/null
		result $? "$mode: each request has queue, prefill, transfer and decode times within its e2e" "$tmp/$mode.status"
		# 3b. The decode side keeps the blocks it holds for a prompt's prefix: the same
		#     long prompt again moves far fewer bytes, with the same text.
		b0=$(status | "$JQ" '.links[0].bytes')
		got1=$(complete "In a quiet valley far away, $LONG" 8)
		b1=$(status | "$JQ" '.links[0].bytes')
		got2=$(complete "In a quiet valley far away, $LONG" 8)
		b2=$(status | "$JQ" '.links[0].bytes')
		want=$("$GEN" -m "$MODEL" -p "In a quiet valley far away, $LONG" -n 8 2>/dev/null)
		[ "$got1" = "$want" ] && [ "$got2" = "$want" ] && [ $((b1 - b0)) -gt 0 ] &&
			[ $((4 * (b2 - b1))) -lt $((b1 - b0)) ]
		result $? "$mode: a repeated prompt ships $((b2 - b1)) bytes instead of $((b1 - b0)) (decode-side prefix), same text" "$tmp/$mode.out"
		status | jq_true '.links[0].handoff_ms_mean > 0' >/dev/null
		result $? "$mode: /v1/status reports the hand-off time of the link" "$tmp/$mode.out"
		# 4. Every reservation was consumed or given back; nothing is in use.
		wait_status '[.partitions[] | select(.kv.leased != 0 or .kv.used != 0)] | length == 0'
		result $? "$mode: no KV block leased or in use on either partition afterwards" "$tmp/$mode.status"
		"$CURL" -sS --max-time 10 --unix-socket "$api" http://duet/metrics >"$tmp/$mode.metrics"
		grep -Eq "^duet_kv_transfer_bytes_total\{partition=\"pre\",role=\"prefill\",transport=\"$mode\"\} [1-9]" "$tmp/$mode.metrics" &&
			grep -Eq "^duet_kv_transfer_seconds_count\{partition=\"pre\",role=\"prefill\",transport=\"$mode\"\} [1-9]" "$tmp/$mode.metrics" &&
			grep -q '^duet_kv_lease_expired_total{partition="dec",role="decode",transport="'$mode'"} 0' "$tmp/$mode.metrics"
		result $? "$mode: /metrics has the KV transfer families labelled transport=\"$mode\"" "$tmp/$mode.metrics"
	fi
	stop
	rc=$?
	[ $rc -eq 0 ] && clean_log "$tmp/$mode.out"
	result $? "$mode: SIGTERM exits 0 (got $rc), no [alert]" "$tmp/$mode.out"
done

# 5. stories260K's golden texts (llama2.c) through the split, over shm.
if [ -f "$SHARED/models/stories260K.gguf" ]; then
	config golden "$SPLIT" shm "$(cd "$SHARED" && pwd)/models/stories260K.gguf" f32
	start golden
	fails=0
	for c in once_upon_a_time the_little_dog lily_and_tom; do
		prompt=$(sed -n 's/^ *"prompt": "\(.*\)",$/\1/p' "$SHARED/golden/stories260K/$c.json" | head -n 1)
		want=$(cat "$SHARED/golden/stories260K/$c.run_c_stdout.txt")
		got=$(complete "$prompt" 128)
		if [ "$prompt$got" != "$want" ]; then
			fails=$((fails + 1))
			printf '%s\nwant: %s\ngot:  %s%s\n' "$c" "$want" "$prompt" "$got" >>"$tmp/golden.diff"
		fi
	done
	[ $fails -eq 0 ]
	result $? "stories260K through prefill -> decode (shm) matches llama2.c for 3 golden prompts" "$tmp/golden.diff"
	stop
else
	skip "stories260K not found under $SHARED"
fi

tap_done
