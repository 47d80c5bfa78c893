#!/bin/sh
# Integration: duet-generate --requests (continuous batching through the scheduler).
# The batch-invariance promise: each request's tokens and text equal what
# duet-generate -p gives for the same prompt alone (greedy).
# TAP-style output; fails on any [alert] line or sanitizer report.
# Usage: batch_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
GEN="$BUILD/bin/duet-generate"
MODEL="$BUILD/models/duet-tiny.gguf"
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-batch-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# The comparable part of a result: "generated_ids": [...], "text": "...", "finish_reason": "..."
core() {
	sed -n 's/.*\("generated_ids": \[[^]]*\], "text": ".*", "finish_reason": "[a-z]*"\).*/\1/p'
}

P1="Hello"
P2="The shared prefix of two requests is long enough to fill blocks. First"
P3="The shared prefix of two requests is long enough to fill blocks. Second"
P4="Once upon a time"
P5="Lily and Tom went to the park"
cat >"$tmp/req.jsonl" <<EOF
{"id": "r1", "prompt": "$P1", "max_tokens": 16}
{"id": "r2", "prompt": "$P2", "max_tokens": 12}
{"id": "r3", "prompt": "$P3", "max_tokens": 12, "arrival_ms": 20}
{"id": "r4", "prompt": "$P4", "max_tokens": 20, "stop": ["q8"], "tenant": "t1"}
{"id": "r5", "prompt": "$P5", "max_tokens": 10, "priority": 2, "arrival_ms": 5}
EOF

# 1. The trace runs: 5 results in input order, then the summary as the last line.
"$GEN" -m "$MODEL" --requests "$tmp/req.jsonl" --max-batch-seqs 4 >"$tmp/out.jsonl" 2>"$tmp/b.err"
rc=$?
if [ $rc -eq 0 ] && [ "$(wc -l <"$tmp/out.jsonl")" -eq 6 ] &&
	[ "$(grep -c '^{"id": "r[1-5]", ' "$tmp/out.jsonl")" -eq 5 ] &&
	sed -n 1p "$tmp/out.jsonl" | grep -q '^{"id": "r1"' &&
	sed -n 6p "$tmp/out.jsonl" | grep -q '^{"summary": true, "requests": 5, "failed": 0, ' &&
	sed -n 6p "$tmp/out.jsonl" | grep -q '"ttft_ms": {"p50": [0-9.]*, "p90": ' &&
	sed -n 6p "$tmp/out.jsonl" | grep -q '"sched_overhead": ' && clean_log "$tmp/b.err"; then
	ok "duet-generate --requests: one result per request and a summary line"
else
	cat "$tmp/out.jsonl" >>"$tmp/b.err"
	not_ok "duet-generate --requests (rc $rc)" "$tmp/b.err"
fi

# 2. Batch invariance: each request alone with -p gives the same ids, text and finish.
fails=0
i=0
for spec in "$P1|16|" "$P2|12|" "$P3|12|" "$P4|20|q8" "$P5|10|"; do
	i=$((i + 1))
	prompt=${spec%%|*}
	rest=${spec#*|}
	max=${rest%%|*}
	stop=${rest#*|}
	if [ -n "$stop" ]; then
		"$GEN" -m "$MODEL" -p "$prompt" -n "$max" --stop "$stop" --json >"$tmp/alone.json" 2>>"$tmp/i.err"
	else
		"$GEN" -m "$MODEL" -p "$prompt" -n "$max" --json >"$tmp/alone.json" 2>>"$tmp/i.err"
	fi
	want=$(core <"$tmp/alone.json")
	got=$(sed -n "${i}p" "$tmp/out.jsonl" | core)
	if [ -z "$want" ] || [ "$want" != "$got" ]; then
		fails=$((fails + 1))
		printf 'request %d\nwant: %s\ngot:  %s\n' $i "$want" "$got" >>"$tmp/i.err"
	fi
done
if [ $fails -eq 0 ] && clean_log "$tmp/i.err"; then
	ok "each batched request equals its single-request run (greedy, stop string included)"
else
	not_ok "batch invariance ($fails of 5 differ)" "$tmp/i.err"
fi

# 3. The requests sharing a prefix hit the prefix cache; without it nothing is cached.
hit=$(sed -n 3p "$tmp/out.jsonl" | sed -n 's/.*"cached_tokens": \([0-9]*\).*/\1/p')
"$GEN" -m "$MODEL" --requests "$tmp/req.jsonl" --no-prefix-cache >"$tmp/nc.jsonl" 2>"$tmp/nc.err"
rc=$?
if [ -n "$hit" ] && [ "$hit" -gt 0 ] && [ $rc -eq 0 ] &&
	tail -n 1 "$tmp/nc.jsonl" | grep -q '"cached_tokens": 0, "prefix_cache_hit_rate": 0.0000' &&
	[ "$(core <"$tmp/nc.jsonl")" = "$(core <"$tmp/out.jsonl")" ] && clean_log "$tmp/nc.err"; then
	ok "shared prefix served from the prefix cache ($hit tokens); same output without it"
else
	not_ok "prefix cache (hit '$hit', rc $rc)" "$tmp/nc.err"
fi

# 4. A bad key is named with its line, exit 1, nothing on stdout.
printf '{"prompt": "ok"}\n\n{"prompt": "x", "max_tokenz": 3}\n' >"$tmp/bad.jsonl"
"$GEN" -m "$MODEL" --requests "$tmp/bad.jsonl" >"$tmp/bad.out" 2>"$tmp/bad.err"
r1=$?
printf '{"prompt": "x", "top_p": 1.5}\n' >"$tmp/bad2.jsonl"
"$GEN" -m "$MODEL" --requests "$tmp/bad2.jsonl" >/dev/null 2>"$tmp/bad2.err"
r2=$?
if [ $r1 -eq 1 ] && grep -q 'line 3: "max_tokenz": unknown key' "$tmp/bad.err" &&
	[ ! -s "$tmp/bad.out" ] && [ $r2 -eq 1 ] && grep -q 'line 1: .*top_p' "$tmp/bad2.err"; then
	ok "invalid requests: exit 1 naming the line and the key"
else
	cat "$tmp/bad.err" "$tmp/bad2.err" >"$tmp/e"
	not_ok "invalid requests (rc $r1 $r2)" "$tmp/e"
fi

# 5. A synthetic trace (prompt_ids, Poisson arrivals) replays under a small KV pool.
"$GEN" -m "$MODEL" --make-requests 24 --seed 3 --prompt-len 20-120 --max-tokens 4-24 \
	--shared-prefix 32 --rate 500 --out "$tmp/syn.jsonl" 2>"$tmp/s.err"
r1=$?
"$GEN" -m "$MODEL" --requests "$tmp/syn.jsonl" --kv-blocks 40 --max-batch-seqs 8 \
	--max-batch-tokens 64 >"$tmp/syn.out" 2>>"$tmp/s.err"
r2=$?
"$GEN" -m "$MODEL" --requests "$tmp/syn.jsonl" --max-batch-seqs 1 >"$tmp/syn1.out" 2>>"$tmp/s.err"
r3=$?
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ $r3 -eq 0 ] && [ "$(wc -l <"$tmp/syn.jsonl")" -eq 24 ] &&
	tail -n 1 "$tmp/syn.out" | grep -q '"requests": 24, "failed": 0' &&
	[ "$(core <"$tmp/syn.out" | wc -l)" -eq 24 ] &&
	[ "$(core <"$tmp/syn.out")" = "$(core <"$tmp/syn1.out")" ] && clean_log "$tmp/s.err"; then
	ok "synthetic trace: same tokens with a small pool and batches of 8 as one at a time"
else
	not_ok "synthetic trace (rc $r1 $r2 $r3)" "$tmp/s.err"
fi

tap_done
