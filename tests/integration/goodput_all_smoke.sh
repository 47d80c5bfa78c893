#!/bin/sh
# Integration: the published experiment's one command on short traces.
# tests/bench/bench_goodput_all.sh runs the chat profile over mixed and 1p1d
# (the tiny model, 1 s of arrivals at 2 rates, SLOs derived from 2 unloaded
# requests), then bench_slo_scale.sh judges both sweeps again at two SLO
# scales and bench_plan_check.sh profiles three daemons and compares the
# planner with both sweeps.  Checks: exit 0; both sweeps and the derived
# SLOs written; rescoring at the run's own scale gives the sweep's own
# attainments; the planner check has a row with an MAE for every sweep and
# profile that fits; the three profiles are version 2; no daemon log has an
# [alert] or a sanitizer report.  Needs curl and jq.
# Usage: goodput_all_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
MODEL="$(pwd)/$BUILD/models/duet-tiny.gguf"
JQ=$(command -v jq || true)
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-gpall-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ ! -x /usr/bin/curl ] || [ -z "$JQ" ]; then
	skip "goodput_all: curl or jq not found (make test installs them)"
	tap_done
	exit
fi

BUILD=$BUILD OUT="$tmp/out" CONFIGS="mixed 1p1d" SECONDS_PER_RATE=1 UNLOADED_N=2 \
	RATES_chat=2,4 SCALES="3:1.5 100:100" \
	sh tests/bench/bench_goodput_all.sh "$MODEL" chat >"$tmp/run.out" 2>&1
rc=$?
o="$tmp/out"
[ $rc -eq 0 ] && [ -s "$o/chat/mixed-chat.json" ] && [ -s "$o/chat/1p1d-chat.json" ] &&
	jq_true '.derived == true and .ttft_ms > 0 and .tpot_ms > 0 and (.unloaded | keys == ["1p1d","mixed"])' \
		"$o/chat/slo.json" >/dev/null
result $? "bench_goodput_all.sh: chat over mixed and 1p1d with derived SLOs (exit $rc)" "$tmp/run.out"

fails=0
for c in mixed 1p1d; do
	r="$o/chat/rescore-$c-3-1.5.json"
	jq -n --slurpfile a "$o/chat/$c-chat.json" --slurpfile b "$r" \
		'[$a[0].rates[].attainment] == [$b[0].rates[].attainment]' 2>/dev/null | grep -qx true ||
		fails=$((fails + 1))
	jq_true '.rates | all(.attainment == 1)' "$o/chat/rescore-$c-100-100.json" >/dev/null ||
		fails=$((fails + 1))
done
[ $fails -eq 0 ] && [ "$(grep -c '^chat ' "$o/slo-scale.txt")" -eq 4 ]
result $? "bench_slo_scale.sh: the run's own scale gives its attainments, 100x passes all, 4 rows" "$o/slo-scale.txt"

# mixed from the mixed and mixed1 profiles, 1p1d from all three: 5 rows.
fails=0
for f in mixed mixed1 1p1d; do
	jq_true '.version == 2 and (.decode.grid | length) >= 1' "$o/prof-$f.json" >/dev/null ||
		fails=$((fails + 1))
done
[ $fails -eq 0 ] &&
	[ "$(grep -Ec '^chat +(mixed|1p1d) +(mixed|mixed1|1p1d) .* [0-9]+ +[0-9]+/[0-9]+' "$o/plan-check.txt")" -eq 5 ]
result $? "bench_plan_check.sh: 3 version-2 profiles, a row with MAE for each of 5 sweep/profile pairs" "$o/plan-check.txt"

clean_logs "$tmp/logs" "$o"/chat/*.log "$o"/prof-*.log
result $? "duetd logs have no [alert] or sanitizer report" "$tmp/logs"
tap_done
