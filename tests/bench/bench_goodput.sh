#!/bin/sh
# Goodput of one workload profile, mixed vs split: starts duetd with each
# configuration (as tests/bench/bench_split.sh: "mixed" = one partition on
# CPUs 0-1 with 2 threads; "1p1d" = prefill on CPU 0 and decode on CPU 1,
# one thread each, KV over TRANSPORT), sweeps the request rate with
# bench_serve on the profile's seeded trace, and prints each configuration's
# SLO attainment per rate and its goodput (the highest rate with >= 90% of
# requests within both SLOs).  JSON and, with gnuplot, SVG plots are kept
# in OUT.
#
# Usage: bench_goodput.sh MODEL PROFILE RATES SLO_TTFT_MS SLO_TPOT_MS [SECONDS]
#   e.g. bench_goodput.sh build/bench/synth-110m-f16.gguf chat 0.25,0.5,1,2 1000 40 20
# Environment: BUILD [build], CONFIGS ["mixed 1p1d"], TRANSPORT [shm],
#   OUT [a new temp dir], SEED [1]
set -u
MODEL=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
PROFILE=$2
RATES=$3
TTFT=$4
TPOT=$5
SECONDS_PER_RATE=${6:-20}
BUILD=${BUILD:-build}
DUETD=${DUETD:-$BUILD/bin/duetd}
BENCH_SERVE=${BENCH_SERVE:-$BUILD/tests/bench_serve}
CONFIGS=${CONFIGS:-mixed 1p1d}
TRANSPORT=${TRANSPORT:-shm}
SEED=${SEED:-1}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/duet-goodput-XXXXXX")}
mkdir -p "$OUT"
printf 'duet goodput bench key 0123456789abcdef\n' >"$OUT/psk"
chmod 600 "$OUT/psk"
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null' EXIT

for c in $CONFIGS; do
	if [ "$c" = mixed ]; then
		parts='{ name = "mix"; role = "mixed"; cpus = "0-1"; threads = 2; }'
	else
		parts='{ name = "pre"; role = "prefill"; cpus = "0"; threads = 1; },
		       { name = "dec"; role = "decode"; cpus = "1"; threads = 1; }'
	fi
	cat >"$OUT/$c.cfg" <<EOF
model = { path = "$MODEL"; };
kv = { memory_mb = 1024; };
transport = { driver = "$TRANSPORT"; psk_file = "$OUT/psk"; };
partitions = ( $parts );
api = { socket_dir = "$OUT/$c"; max_queue = 4096; };
EOF
	mkdir -p "$OUT/$c"
	"$DUETD" -c "$OUT/$c.cfg" >"$OUT/$c.log" 2>&1 &
	pid=$!
	up=
	for _ in $(seq 1 600); do
		if curl -s --max-time 5 --unix-socket "$OUT/$c/api.sock" http://duet/health 2>/dev/null |
			grep -q '"ok"'; then
			up=1
			break
		fi
		sleep 0.1
	done
	if [ -z "$up" ]; then
		echo "bench_goodput: $c did not come up; see $OUT/$c.log" >&2
		kill -KILL "$pid"
		pid=
		continue
	fi
	echo "== $c ($PROFILE, rates $RATES, SLO TTFT $TTFT ms, TPOT $TPOT ms, ${SECONDS_PER_RATE} s per rate)"
	"$BENCH_SERVE" "$OUT/$c/api.sock" --profile "$PROFILE" --sweep "$RATES" --seed "$SEED" \
		--duration "$SECONDS_PER_RATE" --slo-ttft-ms "$TTFT" --slo-tpot-ms "$TPOT" \
		--ban-token 2 --json "$OUT/$c-$PROFILE.json"
	kill -TERM "$pid"
	wait "$pid"
	pid=
done
echo "bench_goodput: results in $OUT"
