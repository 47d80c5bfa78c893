#!/bin/bash
# Derive the appliance's kernel tuning from a duetd configuration file.
#
#   cmdline.sh [--cpus N] [--hugepages N] CONFIG      the kernel command line tuning
#   cmdline.sh [--cpus N] --housekeeping CONFIG       the housekeeping CPU list (CPUAffinity=)
#   cmdline.sh --partition-cpus CONFIG                one line per partition: "INDEX NAME CPUS"
#
# From the partitions' `cpus` lists (their union is the isolated set):
#   isolcpus=domain,managed_irq,SET  keep the scheduler's load balancing and managed IRQs off them
#   nohz_full=SET                    no scheduler tick while one task runs there
#   rcu_nocbs=SET                    RCU callbacks run elsewhere
#   irqaffinity=HOUSEKEEPING         other IRQs on the housekeeping CPUs
# and from kv.hugepages / kv.memory_mb:
#   hugepages=N                      2 MiB pages: memory_mb / 2 (rounded up) for each partition
#
# The housekeeping set is every CPU of the target (--cpus N, CPUs 0..N-1; default: one more
# than the highest partition CPU) that no partition uses.  Nothing is printed for the
# isolation when no partition names CPUs ("" = all), and no hugepages= when kv.hugepages is
# false.  The parser reads the libconfig text itself (comments, groups, lists, one or many
# settings per line); validate the file with `duetd -c CONFIG --check` as well.
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: $*" >&2; exit 1; }

mode=cmdline
target_cpus=""
hugepages_override=""
while [ $# -gt 0 ]; do
	case "$1" in
	--cpus) target_cpus=${2:?--cpus needs a count}; shift 2 ;;
	--hugepages) hugepages_override=${2:?--hugepages needs a count}; shift 2 ;;
	--housekeeping) mode=housekeeping; shift ;;
	--partition-cpus) mode=partitions; shift ;;
	-h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || die "usage: $prog [--cpus N] [--hugepages N] [--housekeeping|--partition-cpus] CONFIG"
cfg=$1
[ -r "$cfg" ] || die "cannot read $cfg"
case "$target_cpus" in ''|[1-9]|[1-9][0-9]|[1-9][0-9][0-9]|1[0-9][0-9][0-9]) ;;
*) die "--cpus '$target_cpus': want a CPU count 1..1999" ;; esac

# One line per setting of interest: "P <index> <name> <cpus>" for each partition,
# "K <key> <value>" for the kv group.  A small tokenizer over the libconfig text:
# comments (#, //, /* */) dropped, strings kept whole, groups and lists tracked.
parse() {
	awk '
	{ text = text $0 "\n" }
	END {
		n = length(text); i = 1; depth = 0; key = ""; part = -1
		while (i <= n) {
			c = substr(text, i, 1)
			if (c == "#" || substr(text, i, 2) == "//") {
				while (i <= n && substr(text, i, 1) != "\n") i++
				continue
			}
			if (substr(text, i, 2) == "/*") {
				e = index(substr(text, i + 2), "*/")
				i = e ? i + 2 + e + 1 : n + 1
				continue
			}
			if (c == "\"") {
				e = index(substr(text, i + 1), "\"")
				if (!e) break
				value(substr(text, i + 1, e - 1))
				i += e + 1
				continue
			}
			if (c ~ /[A-Za-z_]/) {
				w = ""
				while (i <= n && substr(text, i, 1) ~ /[A-Za-z0-9_.-]/) { w = w substr(text, i, 1); i++ }
				if (key == "" && expect_key()) key = w
				else value(w)
				continue
			}
			if (c ~ /[0-9+-]/ && key != "") {
				w = ""
				while (i <= n && substr(text, i, 1) ~ /[0-9A-Fa-fx.eE+-]/) { w = w substr(text, i, 1); i++ }
				value(w)
				continue
			}
			if (c == "{" || c == "(") {
				stack[++depth] = key
				if (c == "{" && key == "" && stack[depth - 1] == "partitions" && depth == 2) {
					part++; pname[part] = ""; pcpus[part] = ""
				}
				key = ""
			} else if (c == "}" || c == ")") {
				depth--; key = ""
			} else if (c == ";" || c == ",") {
				key = ""
			}
			i++
		}
		for (p = 0; p <= part; p++) printf "P %d %s %s\n", p, pname[p], pcpus[p]
		for (k in kv) printf "K %s %s\n", k, kv[k]
	}
	# a key is expected at the top level and directly inside a group
	function expect_key() { return depth == 0 || stack[depth] != "" || \
		(depth == 2 && stack[1] == "partitions") }
	function value(v) {
		if (key == "") return
		if (depth == 1 && stack[1] == "kv") kv[key] = v
		if (depth == 2 && stack[1] == "partitions" && key == "name") pname[part] = v
		if (depth == 2 && stack[1] == "partitions" && key == "cpus") pcpus[part] = v
		key = ""
	}' "$cfg"
}

# Expand "0-3,8" to one CPU number per line; fail on anything else.
expand() {
	local list=$1 item a b
	[ -z "$list" ] && return 0
	IFS=, read -ra items <<<"$list"
	for item in "${items[@]}"; do
		item=${item// /}
		if [[ $item =~ ^([0-9]+)-([0-9]+)$ ]]; then
			a=${BASH_REMATCH[1]}; b=${BASH_REMATCH[2]}
			[ "$a" -le "$b" ] || die "$cfg: bad CPU range '$item'"
			seq "$a" "$b"
		elif [[ $item =~ ^[0-9]+$ ]]; then
			echo "$item"
		else
			die "$cfg: bad CPU list '$list'"
		fi
	done
}

# Compress sorted CPU numbers (one per line on stdin) to "0-3,8".
compress() {
	awk 'NR == 1 { s = e = $1; next }
	     $1 == e + 1 { e = $1; next }
	     { printf "%s%s", sep, (s == e ? s : s "-" e); sep = ","; s = e = $1 }
	     END { if (NR) printf "%s%s", sep, (s == e ? s : s "-" e); print "" }'
}

parsed=$(parse)
[ -n "$(grep '^P ' <<<"$parsed" || true)" ] || die "$cfg: no partitions found"

if [ "$mode" = partitions ]; then
	grep '^P ' <<<"$parsed" | while read -r _ idx name cpus; do
		echo "$idx $name ${cpus:-all}"
	done
	exit 0
fi

# The isolated set: the union of every partition's CPUs.  A partition with "" (all CPUs)
# shares the machine with everything else, so there is nothing to isolate for it.
isolated=""
all_cpus_partition=""
while read -r _ idx name cpus; do
	if [ -z "${cpus:-}" ]; then
		all_cpus_partition=$name
		continue
	fi
	isolated+="$(expand "$cpus")"$'\n'
done < <(grep '^P ' <<<"$parsed")
isolated=$(sort -n -u <<<"$isolated" | sed '/^$/d')
if [ -n "$all_cpus_partition" ] && [ -n "$isolated" ]; then
	echo "$prog: partition $all_cpus_partition uses all CPUs: no isolation" >&2
	isolated=""
fi

housekeeping=""
if [ -n "$isolated" ]; then
	top=$(tail -n 1 <<<"$isolated")
	n=${target_cpus:-$((top + 1))}
	[ "$top" -lt "$n" ] || die "partition CPU $top does not exist on a $n-CPU target (--cpus)"
	housekeeping=$(seq 0 $((n - 1)) | grep -vxF -f <(echo "$isolated") || true)
	[ -n "$housekeeping" ] || die "the partitions use every CPU of the $n-CPU target:" \
		"leave at least one for housekeeping"
	housekeeping=$(compress <<<"$housekeeping")
	isolated=$(compress <<<"$isolated")
fi

if [ "$mode" = housekeeping ]; then
	echo "$housekeeping"
	exit 0
fi

kv() { grep "^K $1 " <<<"$parsed" | awk '{ print $3 }' || true; }
out=()
if [ -n "$isolated" ]; then
	out+=("isolcpus=domain,managed_irq,$isolated" "nohz_full=$isolated" "rcu_nocbs=$isolated"
	      "irqaffinity=$housekeeping")
fi
if [ "$(kv hugepages)" = true ]; then
	if [ -n "$hugepages_override" ]; then
		pages=$hugepages_override
	else
		mb=$(kv memory_mb); mb=${mb:-256}
		[ "$(kv blocks)" = "" ] || [ "$(kv blocks)" = 0 ] ||
			echo "$prog: kv.blocks is set: sizing huge pages from kv.memory_mb anyway" \
				"(pass --hugepages N to override)" >&2
		nparts=$(grep -c '^P ' <<<"$parsed")
		pages=$(( nparts * ((mb + 1) / 2) ))
	fi
	out+=("hugepages=$pages")
fi
echo "${out[*]}"
