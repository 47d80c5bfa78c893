#!/bin/sh
# The planner against measured goodput: profiles the mixed and the 1p1d
# configuration that bench_goodput.sh ran (`duetctl profile`, its config files
# reused), then runs `duetctl plan --compare` on every sweep it finds in
# OUT/PROFILE/CONFIG-PROFILE.json and prints, per profile and configuration,
# the measured goodput, the predicted one and the error.  Two predictions per
# sweep: from the mixed daemon's profile (2 cores; one profile for every
# split, what `duetctl plan` is for; cores scaled with its assumed
# exponent), from a one-core mixed daemon's (mixed1: one core's costs
# measured, not scaled, for the 1p1d partitions) and, for 1p1d sweeps, from
# the 1p1d daemon's own.  MAE: the mean absolute difference between
# measured and predicted attainment over the rates, in points.
#
# Usage: bench_plan_check.sh MODEL OUT [PROFILE...]
#   (OUT as bench_goodput_all.sh leaves it; PROFILEs default to those in OUT)
# Environment [defaults]: BUILD [build]
# Output: OUT/prof-mixed.json, OUT/prof-mixed1.json, OUT/prof-1p1d.json, OUT/PROFILE/compare-CONFIG-FROM.{txt,json},
#   OUT/plan-check.txt (the summary).
set -u
if [ $# -lt 2 ]; then
	sed -n 's/^# \{0,1\}//; /^Usage:/,/^Output:/p' "$0" >&2
	exit 2
fi
MODEL=$1
OUT=$2
shift 2
BUILD=${BUILD:-build}
DUETD=${DUETD:-$BUILD/bin/duetd}
DUETCTL=${DUETCTL:-$BUILD/bin/duetctl}
PROFILES=${*:-$(cd "$OUT" && for d in chat summarize agent mixed; do [ -d "$d" ] && echo "$d"; done)}
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null' EXIT
status=0

# profile CONFIG: start duetd with a config file bench_goodput.sh wrote (for
# mixed1, one it writes: a mixed partition on cpu 0 with 1 thread), profile it.
profile() {
	cfg=
	base=$1
	[ "$1" = mixed1 ] && base=mixed
	for p in $PROFILES; do
		[ -r "$OUT/$p/$base.cfg" ] && { cfg="$OUT/$p/$base.cfg"; break; }
	done
	if [ "$1" = mixed1 ] && [ -n "$cfg" ]; then
		mkdir -p "$OUT/mixed1"
		sed -e 's|partitions = .*|partitions = ( { name = "mix1"; role = "mixed"; cpus = "0"; threads = 1; } );|' \
			-e "s|socket_dir = \"[^\"]*\"|socket_dir = \"$OUT/mixed1\"|" "$cfg" >"$OUT/mixed1.cfg"
		cfg=$OUT/mixed1.cfg
	fi
	[ -n "$cfg" ] || { echo "bench_plan_check: no $1.cfg under $OUT" >&2; return 1; }
	sock=$(sed -n 's/.*socket_dir = "\([^"]*\)".*/\1/p' "$cfg")/api.sock
	"$DUETD" -c "$cfg" >"$OUT/prof-$1.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 600); do
		"$DUETCTL" -s "$sock" health >/dev/null 2>&1 && break
		sleep 0.1
	done
	echo "== duetctl profile: $1"
	"$DUETCTL" -s "$sock" profile --ban-token 2 --out "$OUT/prof-$1.json"
	rc=$?
	kill -TERM "$pid"
	wait "$pid"
	pid=
	return $rc
}

profile mixed || status=1
profile mixed1 || status=1
profile 1p1d || status=1

{
	printf '%-10s %-11s %-6s %-10s %-10s %-7s %-5s %s\n' profile config from measured predicted error MAE \
		"attainment % at each rate, measured/predicted"
	for p in $PROFILES; do
		for f in "$OUT/$p"/*-"$p".json; do
			[ -r "$f" ] || continue
			c=$(basename "$f" "-$p.json")
			case $c in
			compare-* | rescore-* | *-unloaded) continue ;;
			esac
			case $c in
			mixed-c*) split=mixed extra="--max-batch-tokens ${c#mixed-c}" ;;
			mixed) split=mixed extra= ;;
			1p1d*) split=1p1d extra= ;;
			*) continue ;;
			esac
			for from in mixed mixed1 1p1d; do
				[ -r "$OUT/prof-$from.json" ] || continue
				[ $from = 1p1d ] && [ $split = mixed ] && continue
				o="$OUT/$p/compare-$c-$from"
				# shellcheck disable=SC2086
				"$DUETCTL" plan --compare --profile "$OUT/prof-$from.json" --split $split \
					--cores 2 $extra "$f" >"$o.txt" 2>&1 || status=1
				# shellcheck disable=SC2086
				"$DUETCTL" plan --compare --profile "$OUT/prof-$from.json" --split $split \
					--cores 2 $extra --json "$f" >"$o.json" 2>>"$o.txt" || status=1
				jq -r --arg p "$p" --arg c "$c" --arg from "$from" '
					def g(x; b): if x == null then "-" elif b == "below_lowest" then "< lowest"
						elif b == "at_least" then ">= \(x)" else "\(x)" end;
					.sweeps[0] as $r |
					[$p, $c, $from,
					 g($r.goodput_measured; $r.goodput_measured_bound),
					 g($r.goodput_predicted; $r.goodput_predicted_bound),
					 (if $r.goodput_error == null then "-"
					  else "\($r.goodput_error * 100 | round)%" end),
					 ([$r.rates[] | (.attainment_predicted - .attainment_measured) | fabs]
					  | add / length * 100 | round | "\(.)"),
					 ([$r.rates[] | "\(.attainment_measured * 100 | round)/\(.attainment_predicted * 100 | round)"]
					  | join(" "))]
					| @tsv' "$o.json" 2>/dev/null |
					awk -F'\t' '{ printf "%-10s %-11s %-6s %-10s %-10s %-7s %-5s %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
			done
		done
	done
} | tee "$OUT/plan-check.txt"
exit $status
