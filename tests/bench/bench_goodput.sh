#!/bin/sh
# Goodput of one workload profile over several configurations of duetd (as
# tests/bench/bench_split.sh: "mixed" = one partition on CPUs 0-1 with 2
# threads; "1p1d" = prefill on CPU 0 and decode on CPU 1, one thread each, KV
# over TRANSPORT; "1p1d-shm" / "1p1d-tcp" = the same over shm / over tcp on
# loopback with a pre-shared key; "mixed-cN" = mixed with prefill chunked to
# N tokens a step, max_batch_tokens = N, as Sarathi-Serve does to keep long
# prompts from stalling the decodes beside them).  For each configuration it starts duetd,
# sweeps the request rate with bench_serve on the profile's seeded trace and
# stops it; then it overlays the configurations' sweeps in one plot per
# figure and prints a summary.
#
# SLOs given as numbers are used as they are.  Given as "-" (or left out),
# they are derived first (phase 1): each configuration is started alone and
# its unloaded latency measured (bench_serve --unloaded UNLOADED_N: the
# trace's first requests one at a time); then
#   SLO TTFT = TTFT_X x the largest unloaded TTFT p50 of the configurations,
#   SLO TPOT = TPOT_X x the largest unloaded TPOT p50,
# one SLO for all of them so that their goodputs compare.  They are printed
# and written to OUT/slo.json; phase 2 sweeps every configuration with them.
#
# Usage: bench_goodput.sh MODEL PROFILE RATES [SLO_TTFT_MS|-] [SLO_TPOT_MS|-] [SECONDS]
#   e.g. bench_goodput.sh build/bench/synth-110m-f16.gguf chat 0.25,0.5,1,2 1000 40 20
#        CONFIGS="mixed 1p1d 1p1d-tcp" bench_goodput.sh MODEL chat 0.25,0.5,1,2 - - 20
# Environment [defaults]: BUILD [build], CONFIGS ["mixed 1p1d"], TRANSPORT [shm]
#   (that of "1p1d"), OUT [a new temp dir], SEED [1], TTFT_X [3], TPOT_X [1.5],
#   UNLOADED_N [20; 0 with explicit SLOs: with N > 0 the unloaded latency is
#   measured before each sweep too, for the summary].  Needs curl and jq.
# Output in OUT: CONFIG-PROFILE.json (the sweep, with per-request records),
#   CONFIG-PROFILE-unloaded.json, CONFIG-PROFILE-*.svg (one configuration),
#   PROFILE-attainment.svg, PROFILE-tpot-p99.svg, PROFILE-ttft-p90.svg (all
#   configurations; gnuplot, else skipped with a message), slo.json, logs.
# Exit status: 0; 1 when a configuration did not come up or the SLOs could not
# be derived; 2 on bad usage.
set -u
if [ $# -lt 3 ]; then
	sed -n 's/^# \{0,1\}//; /^Usage:/,/^Exit/p' "$0" >&2
	exit 2
fi
MODEL=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
PROFILE=$2
RATES=$3
TTFT=${4:--}
TPOT=${5:--}
SECONDS_PER_RATE=${6:-20}
BUILD=${BUILD:-build}
DUETD=${DUETD:-$BUILD/bin/duetd}
BENCH_SERVE=${BENCH_SERVE:-$BUILD/tests/bench_serve}
CONFIGS=${CONFIGS:-mixed 1p1d}
TRANSPORT=${TRANSPORT:-shm}
SEED=${SEED:-1}
TTFT_X=${TTFT_X:-3}
TPOT_X=${TPOT_X:-1.5}
derive=
[ "$TTFT" = - ] || [ "$TPOT" = - ] && derive=1
if [ -n "$derive" ]; then UNLOADED_N=${UNLOADED_N:-20}; else UNLOADED_N=${UNLOADED_N:-0}; fi
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/duet-goodput-XXXXXX")}

for t in curl jq; do
	command -v $t >/dev/null || { echo "bench_goodput: $t not found (make deps-bench installs it)" >&2; exit 2; }
done
for f in "$DUETD" "$BENCH_SERVE"; do
	[ -x "$f" ] || { echo "bench_goodput: $f not found or not executable" >&2; exit 2; }
done
for c in $CONFIGS; do
	case $c in mixed | mixed-c[1-9]* | 1p1d | 1p1d-shm | 1p1d-tcp) ;;
	*) echo "bench_goodput: unknown configuration $c (mixed, mixed-cN, 1p1d, 1p1d-shm, 1p1d-tcp)" >&2; exit 2 ;;
	esac
	case $c in mixed-c*[!0-9]*) echo "bench_goodput: $c: the chunk is a number of tokens (mixed-c256)" >&2; exit 2 ;; esac
done
mkdir -p "$OUT"
printf 'duet goodput bench key 0123456789abcdef\n' >"$OUT/psk"
chmod 600 "$OUT/psk"
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null' EXIT
trap 'exit 130' INT TERM
status=0

# start CONFIG: write its config, start duetd, wait until it and its link are up
# and a one-token completion goes through.
start() {
	c=$1
	transport=$TRANSPORT
	case $c in
	mixed) parts='{ name = "mix"; role = "mixed"; cpus = "0-1"; threads = 2; }' ;;
	mixed-c*)
		parts="{ name = \"mix\"; role = \"mixed\"; cpus = \"0-1\"; threads = 2;
		         max_batch_tokens = ${c#mixed-c}; }"
		;;
	*)
		parts='{ name = "pre"; role = "prefill"; cpus = "0"; threads = 1; },
		       { name = "dec"; role = "decode"; cpus = "1"; threads = 1; }'
		case $c in 1p1d-*) transport=${c#1p1d-} ;; esac
		;;
	esac
	cat >"$OUT/$c.cfg" <<EOF
model = { path = "$MODEL"; };
kv = { memory_mb = 1024; };
transport = { driver = "$transport"; psk_file = "$OUT/psk"; };
partitions = ( $parts );
api = { socket_dir = "$OUT/$c"; max_queue = 4096; };
EOF
	mkdir -p "$OUT/$c"
	"$DUETD" -c "$OUT/$c.cfg" >>"$OUT/$c.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 600); do
		curl -s --max-time 5 --unix-socket "$OUT/$c/api.sock" http://duet/v1/status 2>/dev/null |
			jq -e '.state == "up" and .health.ok == true and
				([.links[]? | select(.state != "up")] | length == 0)' >/dev/null 2>&1 &&
			[ "$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' \
				--unix-socket "$OUT/$c/api.sock" -H 'Content-Type: application/json' \
				--data-binary '{"model":"m","prompt":"Hello","max_tokens":1}' \
				http://duet/v1/completions)" = 200 ] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench_goodput: $c did not come up; see $OUT/$c.log" >&2
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
	status=1
	return 1
}

stop() {
	kill -TERM "$pid"
	wait "$pid"
	pid=
}

# unloaded CONFIG: its unloaded latency into OUT/CONFIG-PROFILE-unloaded.json.
unloaded() {
	echo "== $1: unloaded latency ($PROFILE, $UNLOADED_N requests one at a time)"
	"$BENCH_SERVE" "$OUT/$1/api.sock" --profile "$PROFILE" --unloaded "$UNLOADED_N" \
		--seed "$SEED" --ban-token 2 --json "$OUT/$1-$PROFILE-unloaded.json"
}

# Phase 1: the SLOs from the unloaded latencies.
if [ -n "$derive" ]; then
	files=
	for c in $CONFIGS; do
		start "$c" || continue
		unloaded "$c" && files="$files $OUT/$c-$PROFILE-unloaded.json"
		stop
	done
	# shellcheck disable=SC2086
	slo=$([ -n "$files" ] && jq -cs --arg t "$TTFT" --arg p "$TPOT" \
		--argjson tx "$TTFT_X" --argjson px "$TPOT_X" '
		def mx(f): [.[] | f | select(type == "number")] | max;
		def r3: . * 1000 | round / 1000;
		{ttft_ms: (if $t == "-" then mx(.unloaded.ttft_ms.p50) * $tx | r3 else ($t | tonumber) end),
		 tpot_ms: (if $p == "-" then mx(.unloaded.tpot_ms.p50) * $px | r3 else ($p | tonumber) end),
		 ttft_x: $tx, tpot_x: $px, derived: true}' $files)
	# The unloaded figures by configuration, for the record.
	slo=$(for c in $CONFIGS; do
		f="$OUT/$c-$PROFILE-unloaded.json"
		[ -r "$f" ] && jq -c --arg c "$c" '{($c): {ttft_p50_ms: .unloaded.ttft_ms.p50,
			tpot_p50_ms: .unloaded.tpot_ms.p50}}' "$f"
	done | jq -cs --argjson s "${slo:-null}" 'if $s == null then null
		else $s + {unloaded: add} end')
	TTFT=$(printf '%s' "$slo" | jq -r 'if . == null then "null" else .ttft_ms end' 2>/dev/null)
	TPOT=$(printf '%s' "$slo" | jq -r 'if . == null then "null" else .tpot_ms end' 2>/dev/null)
	if [ -z "$TTFT" ] || [ "$TTFT" = null ] || [ "$TPOT" = null ]; then
		echo "bench_goodput: no unloaded latency measured: cannot derive the SLOs" >&2
		exit 1
	fi
	printf '%s\n' "$slo" | jq . >"$OUT/slo.json"
	echo "== SLO: TTFT <= $TTFT ms ($TTFT_X x the largest unloaded TTFT p50), TPOT <= $TPOT ms ($TPOT_X x the largest unloaded TPOT p50); $OUT/slo.json"
else
	jq -n --argjson t "$TTFT" --argjson p "$TPOT" '{ttft_ms: $t, tpot_ms: $p, derived: false}' \
		>"$OUT/slo.json" || exit 2
fi

# Phase 2: the sweeps.
sweeps=
for c in $CONFIGS; do
	start "$c" || continue
	[ -z "$derive" ] && [ "$UNLOADED_N" -gt 0 ] && unloaded "$c"
	echo "== $c ($PROFILE, rates $RATES, SLO TTFT $TTFT ms, TPOT $TPOT ms, ${SECONDS_PER_RATE} s per rate)"
	"$BENCH_SERVE" "$OUT/$c/api.sock" --profile "$PROFILE" --sweep "$RATES" --seed "$SEED" \
		--duration "$SECONDS_PER_RATE" --slo-ttft-ms "$TTFT" --slo-tpot-ms "$TPOT" \
		--ban-token 2 --json "$OUT/$c-$PROFILE.json"
	[ -r "$OUT/$c-$PROFILE.json" ] && sweeps="$sweeps $c=$OUT/$c-$PROFILE.json"
	stop
done

# The configurations side by side.
if [ -n "$sweeps" ]; then
	echo "== all configurations"
	# shellcheck disable=SC2086
	"$BENCH_SERVE" --overlay $sweeps --plot-dir "$OUT" >"$OUT/overlay.out" 2>"$OUT/overlay.err"
	grep 'overlay plots' "$OUT/overlay.out"
fi
echo "== summary: $PROFILE, SLO TTFT <= $TTFT ms and TPOT <= $TPOT ms, rates $RATES"
printf '%-10s %18s %18s  %s\n' config "unloaded TTFT p50" "unloaded TPOT p50" "goodput (req/s)"
for c in $CONFIGS; do
	u="$OUT/$c-$PROFILE-unloaded.json"
	s="$OUT/$c-$PROFILE.json"
	ttft=-
	tpot=-
	gp=-
	[ -r "$u" ] && ttft=$(jq -r '.unloaded.ttft_ms.p50 // "-" | "\(.) ms"' "$u") &&
		tpot=$(jq -r '.unloaded.tpot_ms.p50 // "-" | "\(.) ms"' "$u")
	[ -r "$s" ] && gp=$(jq -r 'if .goodput_bound == "below_lowest" then "< \(.rates | map(.rate) | min)"
		elif .goodput_bound == "at_least" then ">= \(.goodput)"
		elif .goodput == null then "-" else "\(.goodput)" end' "$s")
	printf '%-10s %18s %18s  %s\n' "$c" "$ttft" "$tpot" "$gp"
done
echo "bench_goodput: results in $OUT"
exit $status
