#!/bin/sh
# Engine benchmark (`make bench`): builds ~110M-parameter synthetic models in
# F16 and Q8_0 (dim 768, 12 layers, 12 heads, ffn 2048, vocab 32000, context
# 1024) and runs duet-generate --bench (pp512, tg128) at 1 and 2 threads,
# plus stories260K from ../shared when present, and the memory bandwidth
# that decode speed should be judged against.
# Usage: bench_generate.sh BUILD_DIR [SHARED_DIR]
set -eu
BUILD=${1:-build}
SHARED=${2:-../shared}
GEN="$BUILD/bin/duet-generate"
MK="$BUILD/bin/duet-mkmodel"
dir="$BUILD/bench"
mkdir -p "$dir"
reps=${BENCH_REPS:-3}

"$BUILD/tests/bench_membw"
echo
for t in f16 q8_0; do
	m="$dir/synth-110m-$t.gguf"
	[ -f "$m" ] || "$MK" --preset 110m --type "$t" --seed 42 -q -o "$m"
	for th in 1 2; do
		"$GEN" -m "$m" --bench -p 512 -n 128 -r "$reps" -t "$th" | tail -n +3
	done
done
if [ -f "$SHARED/models/stories260K.gguf" ]; then
	for th in 1 2; do
		"$GEN" -m "$SHARED/models/stories260K.gguf" --bench -p 128 -n 256 -r "$reps" -t "$th" |
			tail -n +3
	done
else
	echo "stories260K: skipped ($SHARED/models/stories260K.gguf not found)"
fi
