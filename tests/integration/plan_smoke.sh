#!/bin/sh
# Integration: the planner end to end.  `duetctl profile` measures the cost
# model against duetd (one prefill and one decode partition over shm, the
# tiny model) and writes JSON with increasing prefill points, four decode
# batch sizes and a measured transfer; `duetctl plan` on it prints every
# split of 2 cores with a predicted goodput and a recommendation, for a
# generated trace and for a JSONL trace file; `duetctl plan --compare`
# predicts a 2-rate bench_serve sweep run against the same daemon (the same
# request counts per rate, text and JSON); bad usage exits 2, a bad profile,
# a bad sweep file or no daemon exits 1; duetd exits 0 with a clean log.
# Needs jq.
# Usage: plan_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
BENCH="$BUILD/tests/bench_serve"
CTL="$BUILD/bin/duetctl"
MODEL="$(pwd)/$BUILD/models/duet-tiny.gguf"
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-plan-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

if [ -z "$JQ" ]; then
	skip "planner: jq not found (make test installs it)"
	tap_done
	exit
fi

api="$tmp/api.sock"
printf 'duet plan test key 0123456789abcdef\n' >"$tmp/psk"
chmod 600 "$tmp/psk"
cat >"$tmp/duet.cfg" <<CFG
model = { path = "$MODEL"; };
kv = { memory_mb = 64; };
transport = { driver = "shm"; psk_file = "$tmp/psk"; };
partitions = ( { name = "pre"; role = "prefill"; threads = 1; },
	       { name = "dec"; role = "decode"; threads = 1; } );
api = { socket_dir = "$tmp"; canary_interval_ms = 300; };
CFG

"$CTL" -s "$api" profile --out "$tmp/x.json" >"$tmp/nodaemon.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q 'no daemon' "$tmp/nodaemon.out"
result $? "profile without a daemon: exit 1, says so (got $rc)" "$tmp/nodaemon.out"

"$DUETD" -c "$tmp/duet.cfg" >"$tmp/duetd.out" 2>&1 &
pid=$!
up=1
for _ in $(seq 1 300); do
	"$CTL" -s "$api" status --json 2>/dev/null | jq_true '.state == "up" and .health.ok == true and
		([.links[] | select(.state != "up")] | length == 0) and (.links | length == 1)' \
		>/dev/null 2>&1 && { up=0; break; }
	sleep 0.1
done
result $up "duetd up with a prefill and a decode partition, link up" "$tmp/duetd.out"

# 1. profile: the tiny model's EOS is id 2; ban it so decode requests run full.
"$CTL" -s "$api" profile --ban-token 2 --cores 1 --out "$tmp/prof.json" >"$tmp/profile.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q 'written to' "$tmp/profile.out"
result $? "duetctl profile --out runs (exit $rc)" "$tmp/profile.out"
jq_true '.prefill.points | length >= 3 and
	([.[][0]] == ([.[][0]] | sort)) and all(.[]; .[1] > 0)' "$tmp/prof.json" >/dev/null &&
	jq_true '.prefill.partition == "pre" and .prefill.cores == 1' "$tmp/prof.json" >/dev/null
result $? "profile: prefill times at >= 3 increasing prompt lengths, on partition pre" "$tmp/prof.json"
jq_true '.version == 2 and (.decode.contexts | length) == 3 and
	([.decode.contexts[]] == ([.decode.contexts[]] | sort)) and
	all(.decode.grid[]; length == 4 and all(.[]; . > 0))' "$tmp/prof.json" >/dev/null
result $? "profile: v2 decode table, 3 contexts x 4 batch sizes" "$tmp/prof.json"
jq_true '([.decode.points[][0]] == [1, 2, 4, 8]) and all(.decode.points[]; .[1] > 0) and
	.decode.partition == "dec" and .decode.ms_per_context_token >= 0 and
	.transfer.measured == true and .transfer.ms >= 0 and .limits.max_context == 1024' \
	"$tmp/prof.json" >/dev/null
result $? "profile: decode steps at batch 1, 2, 4, 8 on dec; transfer measured; context 1024" "$tmp/prof.json"

# 2. plan on it.
"$CTL" plan --profile "$tmp/prof.json" --trace-profile chat --slo-ttft-ms 500 --slo-tpot-ms 50 \
	--cores 2 --duration 20 >"$tmp/plan.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q '^mixed 2 ' "$tmp/plan.out" && grep -q '^1p1d ' "$tmp/plan.out" &&
	grep -Eq '^recommendation: ((mixed 2|1p1d), predicted goodput [0-9.e+]+ req/s|none)' "$tmp/plan.out"
result $? "duetctl plan: mixed 2 and 1p1d with goodput, and a recommendation (exit $rc)" "$tmp/plan.out"

printf '%s\n' '{"arrival_s":0.0,"prompt_tokens":100,"max_tokens":20}' \
	'{"arrival_s":0.5,"prompt_tokens":400,"max_tokens":8}' \
	'{"arrival_s":1.0,"prompt":"a text prompt of some forty bytes or so.","max_tokens":30}' \
	>"$tmp/trace.jsonl"
"$CTL" plan --profile "$tmp/prof.json" --trace "$tmp/trace.jsonl" --slo-ttft-ms 500 \
	--slo-tpot-ms 50 --cores 3 >"$tmp/plantrace.out" 2>&1
rc=$?
[ $rc -eq 0 ] && [ "$(grep -Ec '^(mixed 3|1p2d|2p1d) ' "$tmp/plantrace.out")" -eq 3 ] &&
	grep -q '^recommendation: ' "$tmp/plantrace.out"
result $? "duetctl plan --trace FILE --cores 3: three splits and a recommendation (exit $rc)" "$tmp/plantrace.out"

# 3. --compare with a measured sweep: the same trace at the same rates.
"$BENCH" "$api" --seed 3 --ban-token 2 --timeout 30 --profile chat --duration 2 \
	--max-context 256 --sweep 2,4 --slo-ttft-ms 2000 --slo-tpot-ms 200 \
	--json "$tmp/sweep.json" >"$tmp/sweep.out" 2>&1
rc=$?
[ $rc -eq 0 ] && [ -s "$tmp/sweep.json" ]
result $? "bench_serve --sweep 2,4 for the comparison (exit $rc)" "$tmp/sweep.out"
"$CTL" plan --compare --profile "$tmp/prof.json" --split 1p1d "$tmp/sweep.json" \
	>"$tmp/compare.out" 2>&1
rc=$?
[ $rc -eq 0 ] && [ "$(grep -Ec '^ +[24]\.000 ' "$tmp/compare.out")" -eq 2 ] &&
	grep -q '^goodput measured: ' "$tmp/compare.out" &&
	grep -q '^goodput predicted: ' "$tmp/compare.out" && grep -q '^goodput error: ' "$tmp/compare.out"
result $? "plan --compare: a row per measured rate and both goodputs (exit $rc)" "$tmp/compare.out"
"$CTL" plan --compare --json --profile "$tmp/prof.json" --split 1p1d "$tmp/sweep.json" \
	>"$tmp/compare.json" 2>"$tmp/comparej.out"
rc=$?
[ $rc -eq 0 ] && jq_true '(.sweeps | length) == 1 and .sweeps[0].split == "1p1d" and
	(.sweeps[0].rates | length) == 2 and
	all(.sweeps[0].rates[]; .requests_predicted == .requests_measured and
		.attainment_predicted >= 0 and .attainment_predicted <= 1) and
	(.sweeps[0].goodput_predicted | type) == "number"' "$tmp/compare.json" >/dev/null
result $? "plan --compare --json: the same request counts as measured at each rate (exit $rc)" "$tmp/compare.json"
echo '{"workload":{"profile":"chat"},"slo":{"ttft_ms":1,"tpot_ms":1},"rates":[]}' \
	>"$tmp/badsweep.json"
"$CTL" plan --compare --profile "$tmp/prof.json" --split mixed "$tmp/sweep.json" \
	"$tmp/badsweep.json" >"$tmp/badsweep.out" 2>&1
r1=$?
"$CTL" plan --compare --profile "$tmp/prof.json" --split mixed "$tmp/nosuch.json" \
	>"$tmp/nosweep.out" 2>&1
r2=$?
"$CTL" plan --compare --profile "$tmp/prof.json" "$tmp/sweep.json" >"$tmp/nosplit.out" 2>&1
r3=$?
[ $r1 -eq 1 ] && grep -q 'badsweep.json: workload: "burstiness": missing' "$tmp/badsweep.out" &&
	grep -q '^mixed\|predicted on mixed' "$tmp/badsweep.out" &&
	[ $r2 -eq 1 ] && grep -q 'nosuch.json' "$tmp/nosweep.out" && [ $r3 -eq 2 ]
result $? "plan --compare: a bad sweep exits 1 naming it ($r1), a missing one 1 ($r2), no --split 2 ($r3)" "$tmp/badsweep.out"

# 4. Exit codes.
"$CTL" plan --slo-ttft-ms 1 --slo-tpot-ms 1 >"$tmp/usage1.out" 2>&1
r1=$?
"$CTL" plan --profile "$tmp/prof.json" --slo-ttft-ms 1 --slo-tpot-ms 1 --trace-profile nope \
	>"$tmp/usage2.out" 2>&1
r2=$?
"$CTL" -s "$api" profile --bogus >"$tmp/usage3.out" 2>&1
r3=$?
[ $r1 -eq 2 ] && [ $r2 -eq 2 ] && [ $r3 -eq 2 ]
result $? "bad usage exits 2 (no --profile $r1, bad --trace-profile $r2, unknown option $r3)" "$tmp/usage2.out"
echo '{"prefill":{"points":[[10,1],[5,2]]},"decode":{"points":[[1,1]]}}' >"$tmp/bad.json"
"$CTL" plan --profile "$tmp/bad.json" --slo-ttft-ms 1 --slo-tpot-ms 1 >"$tmp/bad.out" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q 'increasing' "$tmp/bad.out"
result $? "a bad profile exits 1 and says why (got $rc)" "$tmp/bad.out"

clean_logs "$tmp/ctl.logs" "$tmp/profile.out" "$tmp/plan.out" "$tmp/plantrace.out" \
	"$tmp/bad.out" "$tmp/compare.out" "$tmp/comparej.out" "$tmp/badsweep.out"
result $? "duetctl's output has no sanitizer report" "$tmp/ctl.logs"

stop
[ $rc -eq 0 ] && clean_log "$tmp/duetd.out"
result $? "SIGTERM exits 0 (got $rc), no [alert]" "$tmp/duetd.out"

tap_done
