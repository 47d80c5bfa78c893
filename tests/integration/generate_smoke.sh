#!/bin/sh
# Integration: duet-generate end to end (tokenizer, engine, sampler, detokenizer).
# TAP-style output; fails on any [alert] line or sanitizer report.
# Usage: generate_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
GEN="$BUILD/bin/duet-generate"
SHARED=${DUET_SHARED:-../shared}
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-gen-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. The bundled model generates, as text and as JSON, the same tokens twice.
"$GEN" -m "$BUILD/models/duet-tiny.gguf" -p "Hello" -n 16 --json >"$tmp/a.json" 2>"$tmp/a.err"
rc1=$?
"$GEN" -m "$BUILD/models/duet-tiny.gguf" -p "Hello" -n 16 --json -t 1 >"$tmp/b.json" 2>>"$tmp/a.err"
rc2=$?
ids_a=$(sed -n 's/.*"generated_ids": \(\[[^]]*\]\).*/\1/p' "$tmp/a.json")
ids_b=$(sed -n 's/.*"generated_ids": \(\[[^]]*\]\).*/\1/p' "$tmp/b.json")
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ -n "$ids_a" ] && [ "$ids_a" = "$ids_b" ] &&
	grep -q '"prompt_ids": \[1, ' "$tmp/a.json" && grep -q '"decode_tokens_per_s"' "$tmp/a.json" &&
	clean_log "$tmp/a.err"; then
	ok "duet-generate --json on the bundled model; same ids with 1 and all threads"
else
	not_ok "duet-generate --json on the bundled model (rc $rc1/$rc2)" "$tmp/a.err"
fi

# 2. Sampling is reproducible with a seed and changes with it.
for seed in 7 7 8; do
	"$GEN" -m "$BUILD/models/duet-tiny.gguf" -p "Hi" -n 24 --temp 0.9 --top-p 0.95 --seed $seed \
		--json 2>>"$tmp/r.err" | sed -n 's/.*"generated_ids": \(\[[^]]*\]\).*/\1/p' >>"$tmp/r.ids"
done
if [ "$(sed -n 1p "$tmp/r.ids")" = "$(sed -n 2p "$tmp/r.ids")" ] &&
	[ "$(sed -n 1p "$tmp/r.ids")" != "$(sed -n 3p "$tmp/r.ids")" ] && [ -n "$(sed -n 1p "$tmp/r.ids")" ] &&
	clean_log "$tmp/r.err"; then
	ok "temperature sampling: same seed, same tokens; another seed, other tokens"
else
	not_ok "temperature sampling reproducibility" "$tmp/r.ids"
fi

# 3. stories260K: greedy text equals llama2.c's output for the golden prompts.
if [ -f "$SHARED/models/stories260K.gguf" ]; then
	fails=0
	for c in once_upon_a_time the_little_dog lily_and_tom; do
		prompt=$(sed -n 's/^ *"prompt": "\(.*\)",$/\1/p' "$SHARED/golden/stories260K/$c.json" | head -n 1)
		want=$(cat "$SHARED/golden/stories260K/$c.run_c_stdout.txt")
		got=$("$GEN" -m "$SHARED/models/stories260K.gguf" -p "$prompt" -n 128 --kv-type f32 2>>"$tmp/s.err")
		if [ "$prompt$got" != "$want" ]; then
			fails=$((fails + 1))
			printf '%s\nwant: %s\ngot:  %s%s\n' "$c" "$want" "$prompt" "$got" >>"$tmp/s.err"
		fi
	done
	if [ $fails -eq 0 ] && clean_log "$tmp/s.err"; then
		ok "stories260K greedy text matches llama2.c for 3 golden prompts"
	else
		not_ok "stories260K greedy text matches llama2.c ($fails mismatches)" "$tmp/s.err"
	fi
else
	skip "stories260K not found under $SHARED"
fi

# 4. Bad input: clear errors and exit codes.
"$GEN" -m "$BUILD/models/duet-tiny.gguf" -p "x" --top-p 1.5 >/dev/null 2>"$tmp/e1"
r1=$?
"$GEN" -m "$BUILD/models/duet-tiny.gguf" -p "x" -n 5000 >/dev/null 2>"$tmp/e2"
r2=$?
"$GEN" -m /nonexistent.gguf -p "x" >/dev/null 2>"$tmp/e3"
r3=$?
"$GEN" -p "x" >/dev/null 2>"$tmp/e4"
r4=$?
if [ $r1 -eq 1 ] && grep -q "top_p" "$tmp/e1" && [ $r2 -eq 1 ] && grep -q "exceeds the context" "$tmp/e2" &&
	[ $r3 -eq 1 ] && grep -q "No such file" "$tmp/e3" && [ $r4 -eq 2 ] && grep -q "no model" "$tmp/e4"; then
	ok "invalid sampling values, over-long requests, missing files and usage errors are named"
else
	cat "$tmp/e1" "$tmp/e2" "$tmp/e3" "$tmp/e4" >"$tmp/e"
	not_ok "bad input errors (rc $r1 $r2 $r3 $r4)" "$tmp/e"
fi

tap_done
