#!/bin/sh
# Serving benchmark, mixed versus split: the same load through duetd with
#   mixed  one partition, role "mixed", cpus 0-1, 2 threads;
#   1p1d   a prefill partition (cpu 0, 1 thread) and a decode partition
#          (cpu 1, 1 thread), KV over the shm transport;
# at three load points, each measured by bench_serve for DURATION seconds:
#   low-decode  one decoding client (TPOT, ITL without interference);
#   low-long    one long prompt after another (TTFT of a lone long prompt);
#   mixed       DECODERS decoding clients plus LONG_RATE long prompts/s
#               (Poisson): what long prompts do to running decodes.
# Then a side-by-side summary, and for 1p1d the link's counters from
# /v1/status.  A configuration that does not come up, or whose duetd dies
# during a point, is reported and skipped.  LONG_RATE 0.3 keeps 1p1d's
# one-core prefill partition busy (~60%) but short of saturation; at 0.5
# (~80%) Poisson bursts queue prompts past kv.lease_timeout_ms.
#
# Usage: bench_split.sh MODEL [DURATION]          (needs curl and jq)
# Environment (defaults in brackets):
#   BUILD [build]           duetd is $BUILD/bin/duetd (or $DUETD)
#   BENCH_SERVE             [$BUILD/tests/bench_serve]
#   WARMUP [5]  DECODERS [8]  DECODE_TOKENS [128]  LONG_RATE [0.3]
#   LONG_TOKENS [512]  LONG_OUT [8]  SEED [1]
#   BAN_TOKEN [2]           logit_bias -100 on this id, in place of ignore_eos
#                           (2 is EOS in duet-mkmodel's synthetic models; "" = none)
#   CONFIGS ["mixed 1p1d"]  POINTS ["low-decode low-long mixed"]
#   KEEP=1                  keep the temp dir (configs, logs, JSON results)
set -u
MODEL=${1:?usage: bench_split.sh MODEL [DURATION]}
DURATION=${2:-30}
BUILD=${BUILD:-build}
DUETD=${DUETD:-$BUILD/bin/duetd}
BENCH_SERVE=${BENCH_SERVE:-$BUILD/tests/bench_serve}
WARMUP=${WARMUP:-5}
DECODERS=${DECODERS:-8}
DECODE_TOKENS=${DECODE_TOKENS:-128}
LONG_RATE=${LONG_RATE:-0.3}
LONG_TOKENS=${LONG_TOKENS:-512}
LONG_OUT=${LONG_OUT:-8}
SEED=${SEED:-1}
BAN_TOKEN=${BAN_TOKEN-2}
CONFIGS=${CONFIGS:-mixed 1p1d}
POINTS=${POINTS:-low-decode low-long mixed}

for t in curl jq; do
	command -v $t >/dev/null || { echo "bench_split: $t not found (make deps-test installs it)" >&2; exit 2; }
done
for f in "$DUETD" "$BENCH_SERVE"; do
	[ -x "$f" ] || { echo "bench_split: $f not found or not executable" >&2; exit 2; }
done
[ -r "$MODEL" ] || { echo "bench_split: model $MODEL not readable" >&2; exit 2; }
case $MODEL in /*) ;; *) MODEL="$(pwd)/$MODEL" ;; esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-bsplit-XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	if [ "${KEEP:-0}" = 1 ]; then echo "bench_split: results kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
api="$tmp/api.sock"

# config NAME PARTITIONS [EXTRA]
config() {
	cat >"$tmp/$1.cfg" <<EOF
model = { path = "$MODEL"; };
kv = { memory_mb = 512; };
partitions = ( $2 );
${3:-}
api = { socket_dir = "$tmp"; max_queue = 1024; group = ""; admin_group = ""; };
log = { level = "warn"; };
EOF
}
config mixed '{ name = "mix"; role = "mixed"; cpus = "0-1"; threads = 2; }'
config 1p1d '{ name = "pre"; role = "prefill"; cpus = "0"; threads = 1; },
	     { name = "dec"; role = "decode"; cpus = "1"; threads = 1; }' \
	'transport = { driver = "shm"; };'

status() { curl -sS --max-time 10 --unix-socket "$api" http://duet/v1/status 2>/dev/null; }

# start NAME: duetd up, healthy and every link up within 120 s.
start() {
	"$DUETD" -c "$tmp/$1.cfg" >"$tmp/$1.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 1200); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			echo "bench_split: $1: duetd exited with status $? before it was up; its log:"
			tail -n 20 "$tmp/$1.log" | sed 's/^/    /'
			pid=
			return 1
		fi
		# (jq 1.6 -e exits 0 on empty input: check that there is an answer)
		s=$(status) && [ -n "$s" ] && printf '%s' "$s" | jq -e '.state == "up" and
			.health.ok == true and ([.links[] | select(.state != "up")] | length == 0)' \
			>/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "bench_split: $1: not up after 120 s: $(status | jq -c '{state, health, links: [.links[] | {state, why}]}')"
	tail -n 20 "$tmp/$1.log" | sed 's/^/    /'
	return 1
}
stop() {
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
}

load() { # point -> bench_serve options
	case $1 in
	low-decode) echo "--decoders 1 --decode-tokens $DECODE_TOKENS" ;;
	low-long) echo "--decoders 0 --long-clients 1 --long-tokens $LONG_TOKENS --long-out $LONG_OUT" ;;
	mixed) echo "--decoders $DECODERS --decode-tokens $DECODE_TOKENS --long-rate $LONG_RATE" \
		"--long-tokens $LONG_TOKENS --long-out $LONG_OUT" ;;
	esac
}

echo "== bench_split: $(basename "$MODEL"), $(nproc) cores, ${DURATION} s per point after ${WARMUP} s warm-up =="
for c in $CONFIGS; do
	echo
	case $c in
	mixed) echo "-- mixed: one mixed partition, cpus 0-1, 2 threads" ;;
	1p1d) echo "-- 1p1d: prefill partition (cpu 0, 1 thread) + decode partition (cpu 1, 1 thread), KV over shm" ;;
	esac
	start "$c" || { echo "$c: skipped" >"$tmp/$c.skipped"; continue; }
	for p in $POINTS; do
		echo "[$c / $p]"
		# shellcheck disable=SC2046 # load's options are meant to split
		"$BENCH_SERVE" "$api" --duration "$DURATION" --warmup "$WARMUP" --seed "$SEED" \
			${BAN_TOKEN:+--ban-token "$BAN_TOKEN"} $(load "$p") --json "$tmp/$c-$p.json" |
			sed 's/^/  /'
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			echo "bench_split: $c: duetd exited with status $? during $p; its log:" |
				tee "$tmp/$c.died"
			tail -n 20 "$tmp/$c.log" | sed 's/^/    /'
			pid=
			break
		fi
	done
	[ -n "$pid" ] || continue
	status >"$tmp/$c-status.json" # link counters: totals over all points
	stop
done

# Side by side: one row per figure, one column per configuration.
val() { # config point jq-path -> value, or "-"
	f="$tmp/$1-$2.json"
	[ -r "$f" ] || { echo "-"; return; }
	jq -r "($3) as \$v | if \$v == null then \"-\" elif (\$v | type) == \"number\"
		then (\$v * 100 | round / 100 | tostring) else (\$v | tostring) end" "$f" 2>/dev/null || echo "-"
}
row() { # point label jq-path
	printf '%-11s %-26s' "$1" "$2"
	for c in $CONFIGS; do printf ' %10s' "$(val "$c" "$1" "$3")"; done
	echo
}
echo
echo "== summary (ms unless noted; - = no data) =="
printf '%-11s %-26s' point figure
for c in $CONFIGS; do printf ' %10s' "$c"; done
echo
for p in $POINTS; do
	case $p in
	low-decode)
		row "$p" "decode TPOT p50" '.classes.decode.tpot_ms.p50'
		row "$p" "decode ITL p99" '.classes.decode.itl_ms.p99'
		row "$p" "decode tok/s" '.classes.decode.output_tokens_per_s'
		row "$p" "errors" '.classes.decode.errors'
		;;
	low-long)
		row "$p" "long TTFT p50" '.classes.long.ttft_ms.p50'
		row "$p" "long TTFT p90" '.classes.long.ttft_ms.p90'
		row "$p" "long requests" '.classes.long.requests'
		row "$p" "errors" '.classes.long.errors'
		;;
	mixed)
		for q in p50 p90 p99; do row "$p" "decode TPOT $q" ".classes.decode.tpot_ms.$q"; done
		row "$p" "decode ITL p99" '.classes.decode.itl_ms.p99'
		row "$p" "decode ITL max" '.classes.decode.itl_ms.max'
		row "$p" "decode TTFT p50" '.classes.decode.ttft_ms.p50'
		row "$p" "decode tok/s" '.classes.decode.output_tokens_per_s'
		for q in p50 p90 p99; do row "$p" "long TTFT $q" ".classes.long.ttft_ms.$q"; done
		row "$p" "long requests" '.classes.long.requests'
		row "$p" "errors (decode+long)" '.classes.decode.errors + .classes.long.errors'
		;;
	esac
done
for c in $CONFIGS; do
	[ -e "$tmp/$c.skipped" ] && echo "$c: did not come up (see above)"
	[ -e "$tmp/$c.died" ] && cat "$tmp/$c.died"
	if [ -r "$tmp/$c-status.json" ] && [ "$(jq '.links | length' "$tmp/$c-status.json")" != 0 ]; then
		jq -r --arg c "$c" '.links[] | "\($c) link (totals since start) \(.prefill)->\(.decode) (\(.transport)): \(.bytes) bytes, \(.transfers) transfers, \(.failures) failures, transfer_ms_mean \(.transfer_ms_mean)"' \
			"$tmp/$c-status.json"
	fi
done
exit 0
