#!/bin/sh
# Integration: the real duetd binary on the shipped config and on broken ones.
# Prints TAP-style "ok N - what" / "not ok N - what" lines; exits non-zero on
# any failure.  Fails on any [alert] line or sanitizer report in duetd's log.
# Usage: duetd_smoke.sh BUILD_DIR
set -u
BUILD=${1:-build}
DUETD="$BUILD/bin/duetd"
. "$(dirname "$0")/../tap.sh"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-smoke-XXXXXX")
trap 'rm -rf "$tmp"' EXIT


# 1. The shipped config and the bundled model are valid.
if "$DUETD" -c etc/duet.cfg --check >"$tmp/check.out" 2>&1 && clean_log "$tmp/check.out" &&
	grep -q "configuration and model are valid" "$tmp/check.out"; then
	ok "duetd --check accepts etc/duet.cfg and the bundled model"
else
	not_ok "duetd --check accepts etc/duet.cfg and the bundled model" "$tmp/check.out"
fi

# 2. A broken config: every error listed with file:line, exit 1.
cat >"$tmp/bad.cfg" <<'CFG'
model = { path = "x.gguf"; };
kv = { block_tokens = 3; blok = 1; };
partitions = ( { name = "a"; role = "sideways"; } );
CFG
"$DUETD" -c "$tmp/bad.cfg" --check >"$tmp/bad.out" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "bad.cfg:2: .*block_tokens" "$tmp/bad.out" &&
	grep -q "bad.cfg:2: .*blok" "$tmp/bad.out" && grep -q "bad.cfg:3: .*sideways" "$tmp/bad.out" &&
	clean_log "$tmp/bad.out"; then
	ok "a broken config is rejected with every error at file:line (exit 1)"
else
	not_ok "a broken config is rejected with every error at file:line (exit $rc)" "$tmp/bad.out"
fi

# 3. A config naming a malformed model file: the loader's error, exit 1.
printf 'GGUF\003\000\000\000garbage' >"$tmp/bad.gguf"
sed "s|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$tmp/bad.gguf\"|" etc/duet.cfg >"$tmp/badmodel.cfg"
"$DUETD" -c "$tmp/badmodel.cfg" --check >"$tmp/badmodel.out" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "bad.gguf: .*truncated" "$tmp/badmodel.out" && clean_log "$tmp/badmodel.out"; then
	ok "a malformed model file is rejected with the loader's message (exit 1)"
else
	not_ok "a malformed model file is rejected with the loader's message (exit $rc)" "$tmp/badmodel.out"
fi

# 4. Usage errors exit 2; --print-config-doc prints a config that itself loads.
"$DUETD" --no-such-flag >/dev/null 2>&1
rc=$?
"$DUETD" --print-config-doc >"$tmp/doc.cfg" 2>"$tmp/doc.err"
sed -i "s|^\([[:space:]]*path[[:space:]]*=[[:space:]]*\)\"[^\"]*\"|\1\"$(pwd)/$BUILD/models/duet-tiny.gguf\"|" "$tmp/doc.cfg"
if [ $rc -eq 2 ] && "$DUETD" -c "$tmp/doc.cfg" --check >"$tmp/doc.out" 2>&1; then
	ok "usage errors exit 2; --print-config-doc output is a valid config"
else
	not_ok "usage errors exit 2 (got $rc); --print-config-doc output is a valid config" "$tmp/doc.out"
fi

# 5. It starts, says what it loaded, reloads on SIGHUP, and exits 0 on SIGTERM.
"$DUETD" -c etc/duet.cfg >"$tmp/run.out" 2>&1 &
pid=$!
up=0
for _ in $(seq 1 100); do
	if grep -q "\] duetd: up " "$tmp/run.out"; then
		up=1
		break
	fi
	sleep 0.1
done
reloaded=0
if [ $up -eq 1 ]; then
	kill -HUP $pid
	for _ in $(seq 1 50); do
		grep -q "configuration reloaded" "$tmp/run.out" && reloaded=1 && break
		sleep 0.1
	done
fi
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
if [ $up -eq 1 ] && [ $reloaded -eq 1 ] && [ $rc -eq 0 ] && grep -q "model: .*duet-tiny" "$tmp/run.out" &&
	grep -q "shutting down" "$tmp/run.out" && clean_log "$tmp/run.out"; then
	ok "duetd starts, reports the model, reloads on SIGHUP, exits 0 on SIGTERM"
else
	not_ok "duetd starts, reports the model, reloads on SIGHUP, exits 0 on SIGTERM (up=$up reloaded=$reloaded rc=$rc)" "$tmp/run.out"
fi

tap_done
