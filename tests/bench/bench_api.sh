#!/bin/sh
# API benchmark (`make bench`): duetd on the bundled tiny model, then
#   - GET /health and 1-token completions over api.sock, 1 and 4 connections;
#   - the API path's added latency for a 1-token request: the sequential
#     completion latency against duet-generate's in-process time to the first
#     token for the same prompt (prefill + one sample), p50 and p99;
#   - token sampled in the worker -> its SSE frame written (p50/p99).
# Usage: bench_api.sh BUILD_DIR
set -eu
BUILD=${1:-build}
model="$(pwd)/$BUILD/models/duet-tiny.gguf"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-bench-api-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
sed -e "s|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$model\"|" \
	-e "s|^\([[:space:]]*socket_dir[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$tmp\"|" \
	-e "s|^\([[:space:]]*level[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"warn\"|" \
	-e "s|^\([[:space:]]*prefix_cache[[:space:]]*=[[:space:]]*\)true|\1false|" \
	etc/duet.cfg >"$tmp/duet.cfg"
"$BUILD/bin/duetd" -c "$tmp/duet.cfg" >"$tmp/run.out" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
	[ -S "$tmp/api.sock" ] && "$BUILD/bin/duetctl" -s "$tmp/api.sock" health >/dev/null 2>&1 && break
	sleep 0.1
done
B="$BUILD/tests/bench_api $tmp/api.sock"

echo "== API over api.sock (duet-tiny, $(nproc) cores) =="
$B health 1 20000
$B health 4 20000
$B complete1 1 2000 | tee "$tmp/c1.txt"
$B complete1 4 4000

# In-process baseline: duet-generate's prefill of the same 7 tokens (the time to
# the first token's logits), 200 repetitions in one warm process.  The daemon
# runs without the prefix cache so that it, too, computes every prompt.
base=$("$BUILD/bin/duet-generate" -m "$model" --bench -p 7 -n 1 -r 200 --json 2>/dev/null)
b50=$(echo "$base" | sed -n 's/.*"pp_ms_p50": *\([0-9.]*\).*/\1/p')
b99=$(echo "$base" | sed -n 's/.*"pp_ms_p99": *\([0-9.]*\).*/\1/p')
a50=$(sed -n 's/.*p50 \([0-9.]*\) ms.*/\1/p' "$tmp/c1.txt")
a99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' "$tmp/c1.txt")
awk -v a50="$a50" -v a99="$a99" -v b50="$b50" -v b99="$b99" 'BEGIN {
	printf "1-token request: API p50 %.3f ms, p99 %.3f ms; in-process (duet-generate) p50 %.3f ms, p99 %.3f ms; added p50 %.3f ms, p99 %.3f ms\n",
		a50, a99, b50, b99, a50 - b50, a99 - b99 }'
$B delivery 32 64
