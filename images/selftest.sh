#!/bin/bash
# The appliance's boot self-test, run inside the image by duet-selftest.service when the
# kernel command line has duet.selftest=1.  One line per check on stdout (the console):
#   SELFTEST PASS <check>[: detail]
#   SELFTEST FAIL <check>: why
# and a last "SELFTEST DONE passed=N failed=N".  Exit 0 only when every check passed.
# images/boot-test.sh reads these lines from the serial console.
set -euo pipefail

CFG=/etc/duet/duet.cfg
SOCK=/run/duet/api.sock
READY_TIMEOUT=${DUET_SELFTEST_READY_TIMEOUT:-180}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

passed=0
failed=0
pass() {
	echo "SELFTEST PASS $1${2:+: $2}"
	passed=$((passed + 1))
}
fail() {
	echo "SELFTEST FAIL $1: $2"
	failed=$((failed + 1))
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
oneline() { tr '\n\t' '  ' | LC_ALL=C tr -c '[:print:]' '?' | cut -c1-160; } # one printable line
status_field() { sed -n "s/^$2:[[:space:]]*//p" "$1" 2>/dev/null; }

echo "SELFTEST START at $(uptime_s)s since boot: $(nproc --all) CPUs, kernel $(uname -r)"

# --- duetd is up (Type=notify: active means it said READY=1) -------------------------------
state=unknown
for _ in $(seq "$READY_TIMEOUT"); do
	state=$(systemctl is-active duetd.service || true)
	case "$state" in active | failed) break ;; esac
	sleep 1
done
if [ "$state" = active ]; then
	pass duetd-ready "active at $(uptime_s)s since boot"
else
	fail duetd-ready "duetd.service is '$state' after ${READY_TIMEOUT}s"
fi

# --- the API over api.sock ------------------------------------------------------------------
if out=$(duetctl -s "$SOCK" health 2>&1); then
	pass health "$(oneline <<<"$out")"
else
	fail health "duetctl health: $(oneline <<<"$out")"
fi

t_start=$(date +%s%N)
if out=$(duetctl -s "$SOCK" generate "The appliance says" -n 8 --temp 0 2>&1) && [ -n "$out" ]; then
	ms=$((($(date +%s%N) - t_start) / 1000000))
	pass generate "8 tokens in ${ms} ms: '$(oneline <<<"$out")'"
else
	fail generate "duetctl generate: $(oneline <<<"${out:-no output}")"
fi

if out=$(duetctl -s "$SOCK" metrics 2>&1) && grep -q '^duet_up' <<<"$out"; then
	pass metrics "$(grep -c '^# TYPE' <<<"$out") families, $(grep '^duet_up' <<<"$out" | head -n 1)"
else
	fail metrics "duetctl metrics: no duet_up in: $(oneline <<<"${out:-no output}")"
fi

if out=$(duetctl -s "$SOCK" status 2>&1); then
	pass status "$(grep -c . <<<"$out") lines of status"
else
	fail status "duetctl status: $(oneline <<<"$out")"
fi

# SIGHUP (ExecReload) re-reads the configuration; the daemon keeps serving.
if systemctl reload duetd.service 2>/dev/null && sleep 1 &&
	[ "$(systemctl is-active duetd.service)" = active ] && duetctl -s "$SOCK" health >/dev/null 2>&1; then
	pass reload "systemctl reload duetd: still active and healthy"
else
	fail reload "after systemctl reload duetd: $(systemctl is-active duetd.service || true)"
fi

# --- the kernel command line is the one the configuration asks for --------------------------
ncpu=$(nproc --all)
want_tuning=$(duet-cmdline --cpus "$ncpu" "$CFG" 2>/dev/null || echo "(duet-cmdline failed)")
cmdline=" $(cat /proc/cmdline) "
missing=""
for word in $want_tuning; do
	[[ $cmdline == *" $word "* ]] || missing+=" $word"
done
if [ -z "$missing" ]; then
	pass cmdline "$want_tuning"
else
	fail cmdline "the kernel command line lacks:$missing (from duet-cmdline $CFG)"
fi

# --- CPU isolation ---------------------------------------------------------------------------
want_isolated=$(sed -n 's/.*isolcpus=[a-z_,]*,\([0-9][0-9,-]*\).*/\1/p' <<<"$want_tuning")
isolated=$(cat /sys/devices/system/cpu/isolated 2>/dev/null || echo "?")
nohz=$(cat /sys/devices/system/cpu/nohz_full 2>/dev/null || echo "?")
if [ -z "$want_isolated" ]; then
	pass isolated-cpus "no partition names CPUs: nothing isolated (isolated '$isolated')"
elif [ "$isolated" = "$want_isolated" ]; then
	pass isolated-cpus "isolated $isolated, nohz_full $nohz"
else
	fail isolated-cpus "the kernel isolates '$isolated', the partitions want '$want_isolated'"
fi

# Each partition's worker: every thread on the partition's CPUs.
declare -A want_cpus
while read -r idx name cpus; do
	want_cpus[$idx]="$name $cpus"
done < <(duet-cmdline --partition-cpus "$CFG")
found=0
for dir in /proc/[0-9]*; do
	args=$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline" || true) # it may be gone already
	[[ $args =~ duetd\ --worker\ ([0-9]+) ]] || continue
	idx=${BASH_REMATCH[1]}
	found=$((found + 1))
	read -r name cpus <<<"${want_cpus[$idx]:-? ?}"
	pid=${dir#/proc/}
	lists=$(for t in "$dir"/task/*; do status_field "$t/status" Cpus_allowed_list; done | sort | uniq -c |
		awk '{ printf "%s%s thread(s) on %s", sep, $1, $2; sep = ", " }')
	allowed=$(for t in "$dir"/task/*; do status_field "$t/status" Cpus_allowed_list; done | sort -u)
	if [ "$cpus" = all ]; then
		pass "worker-cpus-$name" "worker $pid (all CPUs allowed by the config): $lists"
	elif [ "$allowed" = "$cpus" ]; then
		pass "worker-cpus-$name" "worker $pid: $lists; partition cpus \"$cpus\""
	else
		fail "worker-cpus-$name" "worker $pid: $lists; partition cpus \"$cpus\""
	fi
done
[ "$found" -gt 0 ] || fail worker-cpus "no 'duetd --worker N' process found"

# Housekeeping: the supervisor and PID 1 stay off the isolated CPUs (CPUAffinity=).
want_hk=$(duet-cmdline --cpus "$ncpu" --housekeeping "$CFG" 2>/dev/null || true)
main=$(systemctl show -p MainPID --value duetd.service)
sup=$(status_field "/proc/$main/status" Cpus_allowed_list)
init=$(status_field /proc/1/status Cpus_allowed_list)
if [ -z "$want_hk" ]; then
	pass housekeeping-cpus "no isolation: supervisor on $sup"
elif [ "$sup" = "$want_hk" ] && [ "$init" = "$want_hk" ]; then
	pass housekeeping-cpus "PID 1 and the duetd supervisor ($main) on $sup"
else
	fail housekeeping-cpus "PID 1 on '$init', duetd supervisor ($main) on '$sup'; want '$want_hk'"
fi

# --- huge pages ------------------------------------------------------------------------------
mem() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
total=$(mem HugePages_Total)
free=$(mem HugePages_Free)
rsvd=$(mem HugePages_Rsvd)
want_pages=$(sed -n 's/.*hugepages=\([0-9]*\).*/\1/p' <<<"$want_tuning")
if [ -z "$want_pages" ]; then
	pass hugepages "kv.hugepages is false: none wanted (HugePages_Total $total)"
elif [ "${total:-0}" -gt 0 ] && [ "$total" = "$want_pages" ]; then
	pass hugepages "HugePages_Total $total (${want_pages} wanted), Free $free, Rsvd $rsvd"
else
	fail hugepages "HugePages_Total '${total:-?}', the configuration wants $want_pages"
fi
if [ -n "$want_pages" ]; then
	inuse=$((total - free + rsvd))
	if journalctl -b -q -u duetd.service --no-pager | grep -q 'no huge pages'; then
		fail kv-hugepages "duetd fell back to normal pages: $(journalctl -b -q -u duetd.service \
			--no-pager | grep 'no huge pages' | head -n 1 | oneline)"
	elif [ "$inuse" -gt 0 ]; then
		pass kv-hugepages "$inuse huge page(s) in use or reserved by the KV pools"
	else
		fail kv-hugepages "no huge page in use or reserved (Total $total, Free $free, Rsvd $rsvd)"
	fi
fi

# --- first boot, logs ------------------------------------------------------------------------
firstboot=$(systemctl is-enabled systemd-firstboot.service 2>/dev/null || true)
mid=$(cat /etc/machine-id 2>/dev/null || true)
if [ "$firstboot" = masked ] && [[ $mid =~ ^[0-9a-f]{32}$ ]]; then
	pass first-boot "systemd-firstboot masked, machine-id $mid"
else
	fail first-boot "systemd-firstboot '$firstboot', machine-id '$mid'"
fi

errors=$(journalctl -b -q -u duetd.service -p err --no-pager 2>/dev/null || true)
if [ -z "$errors" ]; then
	pass duetd-log "no error or alert in duetd's journal"
else
	fail duetd-log "$(head -n 3 <<<"$errors" | oneline)"
fi

if [ "$failed" -gt 0 ]; then
	echo "SELFTEST duetd journal (last 25 lines):"
	journalctl -b -q -u duetd.service --no-pager -n 25 | sed 's/^/SELFTEST | /'
fi
echo "SELFTEST DONE passed=$passed failed=$failed at $(uptime_s)s since boot"
[ "$failed" -eq 0 ]
