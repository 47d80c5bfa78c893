#!/bin/sh
# The goodput experiments of docs/benchmarks.md in one command: for each
# workload profile, bench_goodput.sh over the configurations CONFIGS with SLOs
# derived from their unloaded latency (TTFT_X x and TPOT_X x the largest
# unloaded p50), at the profile's rates; then every sweep judged again at
# other SLO scales (bench_slo_scale.sh, from the per-request records); then,
# when PLAN=1, `duetctl profile` of the mixed, a one-core mixed and the 1p1d
# configuration and `duetctl plan --compare` of each measured sweep against
# the planner's prediction (bench_plan_check.sh).
#
# Usage: bench_goodput_all.sh MODEL [PROFILE...]
#   e.g. bench_goodput_all.sh build/bench/synth-110m-f16.gguf chat summarize
# Environment [defaults]: BUILD [build], OUT [a new temp dir], CONFIGS
#   ["mixed mixed-c256 1p1d 1p1d-tcp"], SECONDS_PER_RATE [40], UNLOADED_N [8],
#   TTFT_X [3], TPOT_X [1.5], PLAN [1], and per profile the rates:
#   RATES_chat [0.25,0.5,0.75,1], RATES_summarize [0.1,0.2,0.3,0.45],
#   RATES_agent [0.5,1,2,3], RATES_mixed [0.2,0.4,0.6,0.9]; and SECONDS_PROFILE
#   for one profile's seconds per rate (SECONDS_agent [30 unless
#   SECONDS_PER_RATE is given]: its top rates send many requests).
# On the 2-core reference machine with the ~110M model the four profiles take
# about an hour; the machine should be otherwise idle.
# Output: OUT/PROFILE/ (bench_goodput.sh's files: sweeps, plots, slo.json),
#   OUT/slo-scale.txt, OUT/prof-CONFIG.json (duetctl profile),
#   OUT/PROFILE/compare-CONFIG-FROM.txt, OUT/plan-check.txt.
set -u
if [ $# -lt 1 ]; then
	sed -n 's/^# \{0,1\}//; /^Usage:/,/^Output:/p' "$0" >&2
	exit 2
fi
MODEL=$1
shift
PROFILES=${*:-chat summarize agent mixed}
BUILD=${BUILD:-build}
export BUILD
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/duet-goodput-all-XXXXXX")}
CONFIGS=${CONFIGS:-mixed mixed-c256 1p1d 1p1d-tcp}
[ -z "${SECONDS_PER_RATE:-}" ] && SECONDS_agent=${SECONDS_agent:-30}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-40}
export UNLOADED_N=${UNLOADED_N:-8} TTFT_X=${TTFT_X:-3} TPOT_X=${TPOT_X:-1.5}
PLAN=${PLAN:-1}
HERE=$(dirname "$0")
status=0

for p in $PROFILES; do
	case $p in
	chat) rates=${RATES_chat:-0.25,0.5,0.75,1} ;;
	summarize) rates=${RATES_summarize:-0.1,0.2,0.3,0.45} ;;
	agent) rates=${RATES_agent:-0.5,1,2,3} ;;
	mixed) rates=${RATES_mixed:-0.2,0.4,0.6,0.9} ;;
	*) echo "bench_goodput_all: unknown profile $p (chat, summarize, agent, mixed)" >&2; exit 2 ;;
	esac
	eval "secs=\${SECONDS_$p:-\$SECONDS_PER_RATE}"
	echo "==== $p: $(date -u +%H:%M:%S)"
	OUT="$OUT/$p" CONFIGS="$CONFIGS" sh "$HERE/bench_goodput.sh" "$MODEL" "$p" "$rates" - - \
		"$secs" || status=1
done
# shellcheck disable=SC2086
sh "$HERE/bench_slo_scale.sh" "$OUT" $PROFILES || status=1
# shellcheck disable=SC2086
[ "$PLAN" = 1 ] && { sh "$HERE/bench_plan_check.sh" "$MODEL" "$OUT" $PROFILES || status=1; }
echo "bench_goodput_all: results in $OUT"
exit $status
