#!/bin/sh
# Integration: the serving benchmark client (tests/bench/bench_serve) end to
# end against duetd with one prefill and one decode partition over shm, on
# the tiny model.  bench_serve --selftest; the context probe; a generated
# trace is byte-identical from its seed; a 2-rate sweep of the chat profile
# (3 s of arrivals each) writes JSON whose request counts equal the trace's,
# with no failures, attainment in [0, 1], ordered percentiles and a goodput;
# plots are drawn with gnuplot, and without it skipped with a message; the
# sweep's per-request records, and the server's phase times joined to them
# (once duetd sends "timings"; until then skipped with a message); --unloaded
# sends one request at a time; --overlay without gnuplot; a trace file is
# replayed as recorded; bench_goodput.sh with derived SLOs over mixed and
# 1p1d-tcp (1 s sweeps: overlay plots and summary); duetd exits 0 with a
# clean log.  Needs curl and jq.
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

# 4. Per-request records, and the server's phase times joined to them.
jq_true 'all(.rates[]; (.per_request | length) == .requests and
	all(.per_request[]; .outcome == "ok" and .class == "chat" and .prompt_tokens > 0 and
		.output_tokens > 0 and .ttft_ms >= 0 and .e2e_ms >= .ttft_ms and .arrival_s >= 0))' \
	"$tmp/sweep.json" >/dev/null
result $? "sweep JSON: one per_request record per request (outcome, class, tokens, TTFT <= e2e)" "$tmp/sweep.json"
if jq_true '[.rates[].per_request[] | has("queue_ms")] | any' "$tmp/sweep.json" >/dev/null; then
	jq_true 'all(.rates[]; .server.timed == .ok and .server.queue_ms.n == .ok and
		.server.prefill_ms.n == .ok and .server.transfer_ms.n == .ok and .server.decode_ms.n == .ok and
		all(.per_request[]; .queue_ms >= 0 and .prefill_ms >= 0 and .transfer_ms >= 0 and
			.decode_ms >= 0 and .partition == "dec" and .prefill_partition == "pre"))' \
		"$tmp/sweep.json" >/dev/null
	result $? "server phase times: queue, prefill, transfer, decode >= 0 for every request, partitions dec / pre" "$tmp/sweep.json"
else
	skip "server phase times: duetd sends no \"timings\" yet (the join is checked once it does)"
fi

# 5. Unloaded latency: the trace's first 3 requests, each sent after the last one ended.
"$BENCH" "$api" $COMMON $GEN --unloaded 3 --json "$tmp/unloaded.json" >"$tmp/unloaded.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q '^unloaded latency (3 of 3 requests ok): TTFT p50' "$tmp/unloaded.out" &&
	jq_true '.sweep.kind == "unloaded" and .unloaded.requests == 3 and .unloaded.ok == 3 and
	.unloaded.ttft_ms.n == 3 and .unloaded.ttft_ms.p50 > 0 and
	.unloaded.ttft_ms.p50 <= .unloaded.ttft_ms.p90 and .unloaded.tpot_ms.n == 3 and
	.rates[0].rate == null and .rates[0].per_request as $p | ($p | length) == 3 and
	all(range(1; 3); $p[.].arrival_s >= $p[. - 1].arrival_s + $p[. - 1].e2e_ms / 1000 - 0.002)' \
	"$tmp/unloaded.json" >/dev/null
result $? "--unloaded 3: one request at a time, TTFT / TPOT p50 <= p90 (exit $rc)" "$tmp/unloaded.out"

# 6. --overlay without gnuplot: a message, the data and script kept, exit 0.
mkdir -p "$tmp/ov"
PATH=/nonexistent "$BENCH" --overlay a="$tmp/sweep.json" "$tmp/nogp/x.json" --plot-dir "$tmp/ov" \
	>"$tmp/overlay.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q 'overlay plots skipped: gnuplot not found' "$tmp/overlay.out" &&
	[ -s "$tmp/ov/chat-overlay-0.dat" ] && [ -s "$tmp/ov/chat-overlay-1.dat" ] &&
	grep -q "title 'x'" "$tmp/ov/chat-overlay.gp" && grep -q '^a  *goodput' "$tmp/overlay.out"
result $? "--overlay without gnuplot: skipped with a message, data and script kept, goodputs listed (exit $rc)" "$tmp/overlay.out"

# 6b. --rescore: under the sweep's own SLOs it finds what the sweep found; under
#     generous ones every request passes, under impossible ones none does.
"$BENCH" --rescore "$tmp/sweep.json" --slo-ttft-ms 2000 --slo-tpot-ms 200 \
	--json "$tmp/same.json" >"$tmp/rescore.out" 2>&1 &&
	"$BENCH" --rescore "$tmp/sweep.json" --slo-ttft-ms 1e9 --slo-tpot-ms 1e9 \
		--json "$tmp/easy.json" >>"$tmp/rescore.out" 2>&1 &&
	"$BENCH" --rescore "$tmp/sweep.json" --slo-ttft-ms 0.000001 --slo-tpot-ms 1e9 \
		--json "$tmp/hard.json" >>"$tmp/rescore.out" 2>&1 &&
	jq -n --slurpfile a "$tmp/sweep.json" --slurpfile b "$tmp/same.json" \
		'[$a[0].rates[].attainment] == [$b[0].rates[].attainment] and
		 $a[0].goodput == $b[0].goodput' | grep -qx true &&
	jq_true '(.rates | all(.attainment == 1)) and .goodput == 4 and .goodput_bound == "at_least"
		and .slo.ttft_ms == 1e9' "$tmp/easy.json" >/dev/null &&
	jq_true '(.rates | all(.attainment == 0 and .slo_ok == 0)) and .goodput == 0
		and .goodput_bound == "below_lowest"' "$tmp/hard.json" >/dev/null &&
	grep -q 'goodput: >= 4 requests/s' "$tmp/rescore.out" &&
	! "$BENCH" --rescore "$tmp/t2.jsonl" --slo-ttft-ms 1 --slo-tpot-ms 1 >>"$tmp/rescore.out" 2>&1
result $? "--rescore: the sweep's own SLOs give its attainment; 1e9 ms all, 1 ns none; a trace file is refused" "$tmp/rescore.out"

# 7. A trace file replayed as recorded.
"$BENCH" "$api" $COMMON --trace "$tmp/t2.jsonl" --json "$tmp/replay.json" >"$tmp/replay.out" 2>&1
jq_true --arg n "$n2" '.sweep.kind == "single" and .rates[0].requests == ($n | tonumber) and
	.rates[0].failed == 0 and .rates[0].attainment == null and .goodput == null' \
	"$tmp/replay.json" >/dev/null
result $? "--trace replays the file's $n2 requests" "$tmp/replay.out"

clean_logs "$tmp/bench.logs" "$tmp/probe.out" "$tmp/sweep.out" "$tmp/nogp.out" \
	"$tmp/unloaded.out" "$tmp/overlay.out" "$tmp/rescore.out" "$tmp/replay.out"
result $? "bench_serve's output has no sanitizer report" "$tmp/bench.logs"

stop
[ $rc -eq 0 ] && clean_log "$tmp/duetd.out"
result $? "SIGTERM exits 0 (got $rc), no [alert]" "$tmp/duetd.out"

# 8. bench_goodput.sh, SLOs derived: mixed (cpus 0-1) and 1p1d over tcp, one 1 s rate each.
if [ "$(nproc 2>/dev/null || echo 1)" -lt 2 ]; then
	skip "bench_goodput.sh: its configurations need 2 CPUs"
else
	OUT="$tmp/gp" UNLOADED_N=2 CONFIGS="mixed 1p1d-tcp" BUILD="$BUILD" \
		sh "$(dirname "$0")/../bench/bench_goodput.sh" "$MODEL" chat 4 - - 1 >"$tmp/gp.out" 2>&1
	rc=$?
	[ $rc -eq 0 ] && jq_true '.derived == true and .ttft_x == 3 and .tpot_x == 1.5 and
		(.ttft_ms - 3 * ([.unloaded[].ttft_p50_ms] | max) | fabs) < 0.002 and
		(.tpot_ms - 1.5 * ([.unloaded[].tpot_p50_ms] | max) | fabs) < 0.002 and
		(.unloaded | keys) == ["1p1d-tcp", "mixed"]' "$tmp/gp/slo.json" >/dev/null &&
		(for c in mixed 1p1d-tcp; do
			jq_true --arg t "$("$JQ" .ttft_ms "$tmp/gp/slo.json")" '.slo.ttft_ms == ($t | tonumber) and
				.rates[0].ok > 0' "$tmp/gp/$c-chat.json" >/dev/null &&
				grep -q "^$c  *[0-9.]* ms  *[0-9.]* ms  " "$tmp/gp.out" || exit 1
		done)
	result $? "bench_goodput.sh: SLOs = 3x / 1.5x the larger unloaded p50, both sweeps under them, summary (exit $rc)" "$tmp/gp.out"
	if command -v gnuplot >/dev/null 2>&1; then
		(for f in attainment tpot-p99 ttft-p90; do
			grep -q '<svg' "$tmp/gp/chat-$f.svg" && grep -q '1p1d-tcp' "$tmp/gp/chat-$f.svg" || exit 1
		done)
		result $? "bench_goodput.sh: overlay plots chat-{attainment,tpot-p99,ttft-p90}.svg with both configurations" "$tmp/gp.out"
	else
		skip "bench_goodput.sh overlay plots: gnuplot not installed (make deps-bench installs it)"
	fi
	clean_logs "$tmp/gp.logs" "$tmp"/gp/*.log
	result $? "bench_goodput.sh: duetd logs have no [alert] or sanitizer report" "$tmp/gp.logs"
fi

tap_done
