#!/bin/sh
# Goodput against the SLOs' scale, from sweeps already run: for each profile
# directory that bench_goodput.sh left in OUT (its slo.json holds every
# configuration's unloaded TTFT and TPOT p50), each scale TX:PX sets
#   SLO TTFT = TX x the largest unloaded TTFT p50, SLO TPOT = PX x the largest
#   unloaded TPOT p50
# and `bench_serve --rescore` judges every configuration's sweep against it
# (from the per-request records: nothing runs again).  One line per profile,
# scale and configuration: the SLOs, the attainment at each rate, the goodput.
#
# Usage: bench_slo_scale.sh OUT [PROFILE...]
# Environment [defaults]: BUILD [build], SCALES ["2:1.25 3:1.5 5:2 5:3 10:5"]
# Output: stdout, and OUT/slo-scale.txt
set -u
if [ $# -lt 1 ]; then
	sed -n 's/^# \{0,1\}//; /^Usage:/,/^Output:/p' "$0" >&2
	exit 2
fi
OUT=$1
shift
BUILD=${BUILD:-build}
BENCH_SERVE=${BENCH_SERVE:-$BUILD/tests/bench_serve}
SCALES=${SCALES:-2:1.25 3:1.5 5:2 5:3 10:5}
PROFILES=${*:-$(cd "$OUT" && for d in chat summarize agent mixed; do [ -r "$d/slo.json" ] && echo "$d"; done)}
status=0
{
	printf '%-10s %-9s %-21s %-11s %-36s %s\n' profile "TTFTx:TPOTx" "SLO TTFT / TPOT ms" config \
		"attainment at each rate" goodput
	for p in $PROFILES; do
		u="$OUT/$p/slo.json"
		[ -r "$u" ] || { echo "bench_slo_scale: no $u" >&2; status=1; continue; }
		for s in $SCALES; do
			tx=${s%%:*}
			px=${s#*:}
			slo=$(jq -r --argjson tx "$tx" --argjson px "$px" '
				[.unloaded[].ttft_p50_ms] as $t | [.unloaded[].tpot_p50_ms] as $p |
				"\($t | max * $tx * 1000 | round / 1000) \($p | max * $px * 1000 | round / 1000)"' "$u") ||
				{ status=1; continue; }
			ttft=${slo% *}
			tpot=${slo#* }
			for f in "$OUT/$p"/*-"$p".json; do
				c=$(basename "$f" "-$p.json")
				case $c in *-unloaded | compare-* | rescore-*) continue ;; esac
				r="$OUT/$p/rescore-$c-$tx-$px.json"
				"$BENCH_SERVE" --rescore "$f" --slo-ttft-ms "$ttft" --slo-tpot-ms "$tpot" \
					--json "$r" >/dev/null 2>"$r.err" || { status=1; cat "$r.err" >&2; continue; }
				jq -r --arg p "$p" --arg s "$tx:$px" --arg slo "$ttft / $tpot" --arg c "$c" '
					[$p, $s, $slo, $c,
					 ([.rates[] | "\(.rate):\(.attainment * 100 | round)%"] | join(" ")),
					 (if .goodput_bound == "below_lowest" then "< \([.rates[].rate] | min)"
					  elif .goodput_bound == "at_least" then ">= \(.goodput)"
					  else "\(.goodput)" end)] | @tsv' "$r" |
					awk -F'\t' '{ printf "%-10s %-9s %-21s %-11s %-36s %s\n", $1, $2, $3, $4, $5, $6 }'
			done
		done
	done
} | tee "$OUT/slo-scale.txt"
exit $status
