#!/bin/bash
# On an appliance node: re-derive the kernel tuning from /etc/duet/duet.cfg after its
# partitions' cpus or kv settings changed, and write it where the next boot reads it.
# Installed in the image as duet-apply-tuning.
#
#   duet-apply-tuning [--dry-run] [CONFIG]
#
# Writes /etc/kernel/cmdline, the CPUAffinity= drop-in of systemd, and (when the node booted
# the disk image) the options of the loader entries on the ESP (partition label duet-esp).
# The kernel command line takes effect at the next reboot; so does CPUAffinity=.
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: $*" >&2; exit 1; }
dry=0
[ "${1:-}" = --dry-run ] && { dry=1; shift; }
CFG=${1:-/etc/duet/duet.cfg}
DROPIN=/etc/systemd/system.conf.d/10-duet-housekeeping.conf
ESP=/dev/disk/by-partlabel/duet-esp
[ "$(id -u)" = 0 ] || [ "$dry" = 1 ] || die "run as root"

duetd -c "$CFG" --check >/dev/null 2>&1 || die "duetd --check rejects $CFG: fix it first"
ncpu=$(nproc --all)
tuning=$(duet-cmdline --cpus "$ncpu" "$CFG")
housekeeping=$(duet-cmdline --cpus "$ncpu" --housekeeping "$CFG")

# The current command line without its tuning words, then the new tuning.
strip='^(isolcpus|nohz_full|rcu_nocbs|irqaffinity|hugepages|duet\.selftest)='
new() { # new CMDLINE: CMDLINE with the tuning replaced
	local w out=()
	for w in $1; do [[ $w =~ $strip ]] || out+=("$w"); done
	echo "${out[*]} $tuning"
}
current=$(cat /etc/kernel/cmdline 2>/dev/null || cat /proc/cmdline)
cmdline=$(new "$current")
echo "$prog: $ncpu CPUs; tuning: ${tuning:-none}; housekeeping CPUs: ${housekeeping:-all}"
echo "$prog: kernel command line: $cmdline"
[ "$dry" = 0 ] || exit 0

echo "$cmdline" >/etc/kernel/cmdline
if [ -n "$housekeeping" ]; then
	sed -i "s/^CPUAffinity=.*/CPUAffinity=${housekeeping//,/ }/" "$DROPIN" 2>/dev/null &&
		grep -q '^CPUAffinity=' "$DROPIN" ||
		printf '[Manager]\nCPUAffinity=%s\n' "${housekeeping//,/ }" >"$DROPIN"
else
	rm -f "$DROPIN"
fi
echo "$prog: wrote /etc/kernel/cmdline and $DROPIN"

if [ -e "$ESP" ]; then
	mnt=$(mktemp -d)
	mount "$ESP" "$mnt"
	trap 'umount "$mnt"; rmdir "$mnt"' EXIT
	for entry in "$mnt"/loader/entries/duet*.conf; do
		[ -f "$entry" ] || continue
		extra=""
		grep -q '^options.* duet\.selftest=1' "$entry" && extra=" duet.selftest=1"
		sed -i "s|^options .*|options $cmdline$extra|" "$entry"
		echo "$prog: updated ${entry#"$mnt"/} on the ESP"
	done
else
	echo "$prog: no $ESP (direct boot?): pass the command line above to the kernel yourself"
fi
echo "$prog: reboot to apply"
