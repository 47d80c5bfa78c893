#!/bin/bash
# Boot test of the appliance image (run by `make image-test` after `make image`).
#
# Boots the image twice under qemu with software emulation (TCG), 2 CPUs and 1 GiB:
#   direct  -kernel vmlinuz -initrd initrd.img -append "$(cat cmdline.txt) duet.selftest=1"
#           with rootfs.ext4 as the virtio disk (snapshot: the image is not changed)
#   uefi    OVMF firmware, systemd-boot on a copy of duet-disk.img whose loader.conf
#           makes the "self-test" entry the default
# The self-test unit in the image (selftest.sh) prints "SELFTEST PASS|FAIL <check>" lines on
# the serial console and powers the VM off; this script reads them from the console log.
# Ends with "image-test: N passed, N failed"; exits 1 on any failure or timeout, after
# printing the tail of the failing boot's console log.
#
# Environment: IMAGE_OUT (default images/out), IMAGE_TEST_TIMEOUT (seconds per boot,
# default 300), IMAGE_TEST_PATHS (default "direct uefi"), IMAGE_TEST_APPEND (more kernel
# command line for the direct boot, e.g. "hugepages=0" to see the self-test catch a fallback).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${IMAGE_OUT:-images/out}
TIMEOUT=${IMAGE_TEST_TIMEOUT:-300}
PATHS=${IMAGE_TEST_PATHS:-direct uefi}
OVMF=${OVMF:-/usr/share/ovmf/OVMF.fd}
TEST=$OUT/test

die() {
	echo "image-test: error: $*" >&2
	exit 1
}
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run 'make image-deps'"
for f in rootfs.ext4 vmlinuz initrd.img cmdline.txt duet-disk.img; do
	[ -s "$OUT/$f" ] || die "$OUT/$f missing: run 'make image' first"
done

rm -rf "$TEST"
mkdir -p "$TEST"
passed=0
failed=0
failed_paths=""

# KVM is not used on purpose: TCG behaves the same on every machine, nested or not.
QEMU=(qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -smp 2 -nodefaults -no-reboot
	-display none -monitor none)

boot() { # boot NAME QEMU-ARGS...: run, then score the console log $TEST/NAME.log
	local name=$1 log=$TEST/$1.log t0 rc secs
	shift
	echo "image-test: $name: booting (TCG, 2 CPUs, 1 GiB, timeout ${TIMEOUT}s; console: $log)"
	t0=$(date +%s)
	rc=0
	timeout -k 10 "$TIMEOUT" "${QEMU[@]}" -serial "file:$log" "$@" </dev/null \
		>"$TEST/$name.qemu.log" 2>&1 || rc=$?
	secs=$(($(date +%s) - t0))
	tr -d '\r' <"$log" >"$log.txt" 2>/dev/null || : >"$log.txt"
	# The unit's output reaches the console through journald: "[ time] duet-selftest[pid]: "
	# before each line, and other console output may share the line.
	grep -a -o 'SELFTEST [A-Z]* .*' "$log.txt" >"$TEST/$name.selftest" || true

	local p f line
	p=$(grep -c '^SELFTEST PASS ' "$TEST/$name.selftest" || true)
	f=$(grep -c '^SELFTEST FAIL ' "$TEST/$name.selftest" || true)
	grep -E '^SELFTEST (PASS|FAIL) ' "$TEST/$name.selftest" | sed "s/^SELFTEST \([A-Z]*\) /image-test: \1 $name /" || true
	passed=$((passed + p))
	failed=$((failed + f))
	line=$(grep '^SELFTEST DONE ' "$TEST/$name.selftest" | tail -n 1 || true)
	local userspace
	userspace=$(grep -a -m1 -o -E '^\[ *[0-9.]+\] systemd\[1\]: systemd [0-9]+' "$log.txt" |
		sed -E 's/^\[ *([0-9.]+)\].*/\1/' || true)
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "image-test: FAIL $name boot: no power-off within ${TIMEOUT}s (timeout)"
		failed=$((failed + 1))
	elif [ -z "$line" ]; then
		echo "image-test: FAIL $name boot: qemu exited ($rc) after ${secs}s without SELFTEST DONE"
		failed=$((failed + 1))
	elif [ "$rc" != 0 ]; then
		echo "image-test: FAIL $name boot: qemu exited with status $rc: $(tail -n 3 "$TEST/$name.qemu.log")"
		failed=$((failed + 1))
	else
		echo "image-test: PASS $name boot: userspace at ${userspace:-?}s (guest clock)," \
			"${line#SELFTEST DONE }, powered off after ${secs}s (host wall clock)"
		passed=$((passed + 1))
	fi
	if [ "$f" -gt 0 ] || [ -z "$line" ] || [ "$rc" != 0 ]; then
		failed_paths+=" $name"
		echo "image-test: $name: last 60 lines of the console ($log.txt):"
		tail -n 60 "$log.txt" | sed 's/^/    | /'
		if [ -s "$TEST/$name.qemu.log" ]; then
			sed 's/^/    qemu: /' "$TEST/$name.qemu.log"
		fi
	fi
	return 0
}

for path in $PATHS; do
	case "$path" in
	direct)
		boot direct -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" \
			-append "$(cat "$OUT/cmdline.txt") duet.selftest=1 ${IMAGE_TEST_APPEND:-}" \
			-drive "file=$OUT/rootfs.ext4,format=raw,if=virtio,snapshot=on"
		;;
	uefi)
		[ -r "$OVMF" ] || die "$OVMF not found: run 'make image-deps' (ovmf)"
		# A sparse copy whose ESP (at 1 MiB) boots the self-test entry at once.
		cp --sparse=always "$OUT/duet-disk.img" "$TEST/disk.img"
		printf 'default duet-selftest.conf\ntimeout 0\nconsole-mode keep\neditor no\n' \
			>"$TEST/loader.conf"
		MTOOLS_SKIP_CHECK=1 mcopy -o -i "$TEST/disk.img@@1048576" "$TEST/loader.conf" \
			::/loader/loader.conf
		boot uefi -bios "$OVMF" -drive "file=$TEST/disk.img,format=raw,if=virtio"
		rm -f "$TEST/disk.img"
		;;
	*) die "unknown boot path '$path' (IMAGE_TEST_PATHS: direct, uefi)" ;;
	esac
done

echo "image-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || {
	echo "image-test: FAILED:$failed_paths (console logs in $TEST/)"
	exit 1
}
