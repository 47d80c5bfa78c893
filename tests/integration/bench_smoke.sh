#!/bin/sh
# Integration: the serving benchmark client (tests/bench/bench_serve) end to
# end against duetd with one prefill and one decode partition over shm, on
# the tiny model.  bench_serve --selftest; the context probe; a generated
# trace is byte-identical from its seed; a 2-rate sweep of the chat profile
# (3 s of arrivals each) writes JSON whose request counts equal the trace's,
# with no failures, attainment in [0, 1], ordered percentiles and a goodput;
# plots are drawn with gnuplot, and without it skipped with a message; a trace file is
# replayed as recorded; duetd exits 0 with a clean log.  Needs curl and jq.
# Usage: bench_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
BENCH="$BUILD/tests/bench_serve"
MODEL="$(pwd)/$BUILD/models/duet-tiny.gguf"
CURL=/usr/bin/curl
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-bench-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

if [ ! -x "$BENCH" ]; then
	skip "serving benchmark: $BENCH not built (make $BENCH)"
	tap_done
	exit
fi

"$BENCH" --selftest >"$tmp/selftest.out" 2>&1
result $? "bench_serve --selftest" "$tmp/selftest.out"

if [ ! -x "$CURL" ] || [ -z "$JQ" ]; then
	skip "serving benchmark: curl or jq not found (make test installs them)"
	tap_done
	exit
fi

api="$tmp/api.sock"
printf 'duet bench test key 0123456789abcdef\n' >"$tmp/psk"
chmod 600 "$tmp/psk"
cat >"$tmp/duet.cfg" <<EOF
model = { path = "$MODEL"; };
kv = { memory_mb = 64; };
transport = { driver = "shm"; psk_file = "$tmp/psk"; };
partitions = ( { name = "pre"; role = "prefill"; threads = 1; },
	       { name = "dec"; role = "decode"; threads = 1; } );
api = { socket_dir = "$tmp"; canary_interval_ms = 300; };
EOF

status() { "$CURL" -sS --max-time 10 --unix-socket "$api" http://duet/v1/status 2>/dev/null; }
"$DUETD" -c "$tmp/duet.cfg" >"$tmp/duetd.out" 2>&1 &
pid=$!
up=1
for _ in $(seq 1 300); do
	status | jq_true '.state == "up" and .health.ok == true and
		([.links[] | select(.state != "up")] | length == 0) and (.links | length == 1)' \
		>/dev/null 2>&1 && { up=0; break; }
	sleep 0.1
done
result $up "duetd up with a prefill and a decode partition, link up" "$tmp/duetd.out"

# The tiny model's synthetic EOS is id 2: ban it so every request runs to max_tokens.
COMMON="--seed 7 --ban-token 2 --timeout 30"
GEN="--profile chat --duration 3 --max-context 256"

# 1. The context probe (the API does not state it): the tiny model's 1024.
"$BENCH" "$api" $COMMON --profile chat --rate 1 --num-requests 3 \
	--write-trace "$tmp/probe.jsonl" >"$tmp/probe.out" 2>&1
grep -q 'context 1024' "$tmp/probe.out"
result $? "bench_serve finds the model's context length (1024) from the server" "$tmp/probe.out"

# 2. Traces are reproducible from the seed.
for r in 2 4; do
	"$BENCH" $COMMON $GEN --rate $r --write-trace "$tmp/t$r.jsonl" 2>>"$tmp/trace.err"
	"$BENCH" $COMMON $GEN --rate $r --write-trace "$tmp/t$r-again.jsonl" 2>>"$tmp/trace.err"
done
cmp -s "$tmp/t2.jsonl" "$tmp/t2-again.jsonl" && cmp -s "$tmp/t4.jsonl" "$tmp/t4-again.jsonl" &&
	[ -s "$tmp/t2.jsonl" ] && ! cmp -s "$tmp/t2.jsonl" "$tmp/t4.jsonl"
result $? "same seed, byte-identical trace files; another rate, another trace" "$tmp/trace.err"
n2=$(wc -l <"$tmp/t2.jsonl")
n4=$(wc -l <"$tmp/t4.jsonl")

# 3. A sweep over two rates.
mkdir -p "$tmp/plots"
"$BENCH" "$api" $COMMON $GEN --sweep 2,4 --slo-ttft-ms 2000 --slo-tpot-ms 200 \
	--json "$tmp/sweep.json" --plot-dir "$tmp/plots" >"$tmp/sweep.out" 2>&1
rc=$?
[ $rc -eq 0 ]
result $? "bench_serve --sweep 2,4 runs (exit $rc)" "$tmp/sweep.out"
jq_true --arg n "$n2 $n4" '
	.sweep.kind == "list" and (.rates | length) == 2 and
	([.rates[].requests] | map(tostring) | join(" ")) == $n and
	all(.rates[]; .failed == 0 and .ok == .requests and .output_tokens > 0 and
		.attainment >= 0 and .attainment <= 1 and .slo_ok <= .ok and
		.request_throughput > 0 and .output_tokens_per_s > 0) and
	(.goodput | type) == "number" and (.goodput_bound | type) == "string"' \
	"$tmp/sweep.json" >/dev/null
result $? "sweep JSON: 2 rates, request counts equal the traces' ($n2, $n4), no failures, attainment in [0,1], goodput" "$tmp/sweep.json"
jq_true 'all(.rates[]; . as $r | all("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms";
	$r[.] as $s | $s.n > 0 and $s.p50 <= $s.p90 and $s.p90 <= $s.p99 and $s.p99 <= $s.max))' \
	"$tmp/sweep.json" >/dev/null
result $? "sweep JSON: TTFT, TPOT, ITL and e2e percentiles ordered p50 <= p90 <= p99 <= max" "$tmp/sweep.json"
if command -v gnuplot >/dev/null 2>&1; then
	grep -q '<svg' "$tmp/plots/sweep-attainment.svg" && grep -q '<svg' "$tmp/plots/sweep-tpot-p99.svg"
	result $? "plots: sweep-attainment.svg and sweep-tpot-p99.svg drawn by gnuplot" "$tmp/sweep.out"
else
	skip "plots: gnuplot not installed (make deps-bench installs it)"
fi
# Without gnuplot on PATH: a message, the data kept, success.
mkdir -p "$tmp/nogp"
PATH=/nonexistent "$BENCH" "$api" $COMMON --profile chat --max-context 128 --num-requests 3 \
	--sweep 8 --slo-ttft-ms 2000 --slo-tpot-ms 200 --json "$tmp/nogp/x.json" >"$tmp/nogp.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q 'plots skipped: gnuplot not found' "$tmp/nogp.out" && [ -s "$tmp/nogp/x.dat" ]
result $? "without gnuplot: plots skipped with a message, data kept, exit 0 (got $rc)" "$tmp/nogp.out"

# 4. A trace file replayed as recorded.
"$BENCH" "$api" $COMMON --trace "$tmp/t2.jsonl" --json "$tmp/replay.json" >"$tmp/replay.out" 2>&1
jq_true --arg n "$n2" '.sweep.kind == "single" and .rates[0].requests == ($n | tonumber) and
	.rates[0].failed == 0 and .rates[0].attainment == null and .goodput == null' \
	"$tmp/replay.json" >/dev/null
result $? "--trace replays the file's $n2 requests" "$tmp/replay.out"

fails=0
for f in probe sweep nogp replay; do
	clean_log "$tmp/$f.out" || { fails=1; cat "$tmp/$f.out" >>"$tmp/bench.logs"; }
done
[ $fails -eq 0 ]
result $? "bench_serve's output has no sanitizer report" "$tmp/bench.logs"

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc -eq 0 ] && clean_log "$tmp/duetd.out"
result $? "SIGTERM exits 0 (got $rc), no [alert]" "$tmp/duetd.out"

tap_done
