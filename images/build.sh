#!/bin/bash
# Build the Duet appliance image (run by `make image`, after the runtime is built).
#
# Outputs in $IMAGE_OUT (default images/out):
#   rootfs.ext4               the root filesystem (ext4, made from a folder with mke2fs -d)
#   vmlinuz, initrd.img       the kernel and initrd beside it, for direct boot
#   cmdline.txt               the kernel command line for direct boot (root=UUID=..., tuning)
#   duet-disk.img             whole-disk GPT image: ESP (systemd-boot, kernel, initrd) + root
#   duet-disk.img.zst         the same, compressed, for flashing
#   duet.cfg                  the image's configuration (normalized by duetd --print-config)
#   rootfs/                   the root filesystem folder the images were made from
#   cache/                    the Debian base (rebuilt only when its inputs change)
#
# Environment: BUILD (the runtime build folder, default build), IMAGE_OUT, IMAGE_SUITE
# (default bookworm), IMAGE_CPUS (CPUs of the target, for the housekeeping set; default 2),
# IMAGE_SOURCES (a sources.list or .sources file to use instead of the host's apt sources),
# MAKE.  Needs root (file ownership in the images) and the tools of `make image-deps`.
# No mounts and no loop devices: every image is written as a plain file.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
OUT=${IMAGE_OUT:-images/out}
SUITE=${IMAGE_SUITE:-bookworm}
CPUS=${IMAGE_CPUS:-2}
MAKE=${MAKE:-make}

# What the image config changes from etc/duet.cfg (the boot test's qemu has 2 CPUs).
PARTITION_CPUS=1 # partition cpu0 on CPU 1; CPU 0 does housekeeping
KV_MEMORY_MB=64  # KV pool per partition, on huge pages

# Packages on top of the minbase variant (Essential + Priority: required).
PACKAGES=(
	systemd systemd-sysv udev dbus                 # init, device manager, bus for logind etc.
	linux-image-amd64 initramfs-tools zstd kmod    # kernel, initrd (zstd-compressed)
	libconfig9 libjansson4 libmicrohttpd12         # what duetd links against
	libncursesw6 libtinfo6                         # duet-console (ncurses)
	e2fsprogs                                      # fsck of the root filesystem at boot
	procps                                         # ps, top, free for the operator
)
# Kernel modules an inference appliance has no use for, and documentation: not installed.
DPKG_EXCLUDES=(
	'/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' '/usr/share/doc/*'
	'/usr/share/lintian/*' '/lib/modules/*/kernel/sound/*' '/lib/modules/*/kernel/drivers/media/*'
	'/lib/modules/*/kernel/drivers/net/wireless/*' '/lib/modules/*/kernel/net/bluetooth/*'
	'/lib/modules/*/kernel/drivers/bluetooth/*' '/lib/modules/*/kernel/drivers/staging/*'
)
DPKG_INCLUDES=('/usr/share/doc/*/copyright' '/usr/share/locale/locale.alias')

ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B  # EFI System Partition
ROOT_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 # Linux root (x86-64), discoverable

t0=$(date +%s)
step() { echo "image: [$(($(date +%s) - t0))s] $*"; }
die() {
	echo "image: error: $*" >&2
	exit 1
}
trap 'echo "image: failed at line $LINENO (exit $?)" >&2' ERR

[ "$(id -u)" = 0 ] || die "run as root: the images hold root-owned files (and no fakeroot is used)"
for tool in mmdebstrap mke2fs e2fsck mkfs.vfat mcopy mmd sfdisk uuidgen zstd; do
	command -v "$tool" >/dev/null || die "$tool not found: run 'make image-deps'"
done
SDBOOT=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -r "$SDBOOT" ] || die "$SDBOOT not found: run 'make image-deps' (systemd-boot-efi)"
[ -x "$BUILD/bin/duetd" ] || die "$BUILD/bin/duetd not built: run 'make BUILD=$BUILD all' first"

mkdir -p "$OUT/cache"
ROOT=$OUT/rootfs

# --- 1. apt sources: the host's, limited to Debian $SUITE -----------------------------------
# Every enabled binary source of the host whose suite is $SUITE or $SUITE-something
# (updates, security), so the image comes from whatever mirror this machine's apt uses.
sources_dir=$OUT/cache/sources
rm -rf "$sources_dir"
mkdir -p "$sources_dir"
if [ -n "${IMAGE_SOURCES:-}" ]; then
	[ -r "$IMAGE_SOURCES" ] || die "IMAGE_SOURCES=$IMAGE_SOURCES: cannot read it"
	cp "$IMAGE_SOURCES" "$sources_dir/"
else
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		case "$f" in
		*.sources) # deb822 stanzas
			awk -v suite="$SUITE" '
			function flush() {
				if (stanza != "" && types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite "([-/][a-z]+)?( |$)") &&
				    tolower(enabled) != "no") {
					sub(/(^|\n)Types:[^\n]*/, "\nTypes: deb", stanza)
					sub(/^\n/, "", stanza)
					printf "%s\n\n", stanza
				}
				stanza = ""; types = ""; suites = ""; enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{ stanza = stanza (stanza == "" ? "" : "\n") $0 }
			/^Types:/ { types = $0; sub(/^Types:[ \t]*/, "", types) }
			/^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
			/^Enabled:/ { enabled = $0; sub(/^Enabled:[ \t]*/, "", enabled) }
			END { flush() }' "$f" >"$sources_dir/$(basename "$f")"
			;;
		*) # one-line entries: deb [options] URI SUITE COMPONENTS...
			awk -v suite="$SUITE" '
			$1 != "deb" { next }
			{ s = $3; if ($2 ~ /^\[/) { for (i = 2; i <= NF && $i !~ /\]$/; i++); s = $(i + 2) } }
			s ~ ("^" suite "([-/][a-z]+)?$") { print }' "$f" >"$sources_dir/$(basename "$f")"
			;;
		esac
		[ -s "$sources_dir/$(basename "$f")" ] || rm -f "$sources_dir/$(basename "$f")"
	done
fi
mapfile -t source_files < <(find "$sources_dir" -type f | sort)
[ ${#source_files[@]} -gt 0 ] ||
	die "no apt source for Debian '$SUITE' in /etc/apt/sources.list(.d): configure one," \
		"or set IMAGE_SOURCES=FILE (a sources.list or deb822 .sources file)"
step "apt sources (from the host): $(grep -h -o -E '(https?|file)://[^ ]+' "${source_files[@]}" | sort -u | tr '\n' ' ')"

# Proxy and validity settings of the host's apt apply to the image build too.
aptopts=('APT::Install-Recommends "false"')
while IFS= read -r line; do
	aptopts+=("$line")
done < <(apt-config dump 2>/dev/null | grep -E '^Acquire::(https?::Proxy|Check-Valid-Until) ' || true)

# --- 2. the Debian base, cached by its inputs ----------------------------------------------
# shellcheck disable=SC2016 # $1 is the hook's argument (the root), expanded by mmdebstrap
FSTYPE_HOOK='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo FSTYPE=ext4 >"$1/etc/initramfs-tools/conf.d/duet-fstype"'
key_input=$(printf '%s\n' "$SUITE" "$FSTYPE_HOOK" "${PACKAGES[@]}" "${DPKG_EXCLUDES[@]}" "${DPKG_INCLUDES[@]}" \
	"${aptopts[@]}"; cat "${source_files[@]}")
key=$(sha256sum <<<"$key_input" | cut -c1-12)
base=$OUT/cache/base-$SUITE-$key.tar
if [ -s "$base" ]; then
	step "Debian base: cached $base"
else
	mm_args=(--variant=minbase --include="$(
		IFS=,
		echo "${PACKAGES[*]}"
	)")
	# Before the kernel's initrd is made: the root is ext4, so initramfs-tools puts fsck.ext4
	# in it (it cannot probe the root device from inside a chroot); kept for later initrds.
	mm_args+=(--essential-hook="$FSTYPE_HOOK")
	for o in "${aptopts[@]}"; do mm_args+=(--aptopt="$o"); done
	for p in "${DPKG_EXCLUDES[@]}"; do mm_args+=(--dpkgopt="path-exclude=$p"); done
	for p in "${DPKG_INCLUDES[@]}"; do mm_args+=(--dpkgopt="path-include=$p"); done
	rm -rf "$OUT"/cache/base-*.tar
	for attempt in 1 2; do
		step "Debian base: mmdebstrap $SUITE (minbase + ${#PACKAGES[@]} packages), attempt $attempt" \
			"(log: $OUT/cache/mmdebstrap.log)"
		# (the target's name ends in .tar: mmdebstrap writes a tarball)
		if mmdebstrap "${mm_args[@]}" "$SUITE" "$OUT/cache/partial.tar" "${source_files[@]}" \
			>"$OUT/cache/mmdebstrap.log" 2>&1; then
			mv "$OUT/cache/partial.tar" "$base"
			break
		fi
		rm -f "$OUT/cache/partial.tar"
		tail -n 15 "$OUT/cache/mmdebstrap.log" | sed 's/^/    /' >&2
		if [ "$attempt" = 1 ]; then
			step "mmdebstrap failed (a mirror may be briefly unreachable): retrying once in 20 s"
			sleep 20
		else
			die "mmdebstrap failed twice: cannot build the Debian base from the apt sources" \
				"above (is a Debian mirror reachable from this machine?); full log:" \
				"$OUT/cache/mmdebstrap.log"
		fi
	done
	step "Debian base: $(du -h "$base" | cut -f1) in $base"
fi

step "root filesystem: unpacking the base into $ROOT"
rm -rf "$ROOT"
mkdir -p "$ROOT"
tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"

# --- 3. Duet: binaries, model, config, unit --------------------------------------------------
step "Duet: make install DESTDIR=$ROOT PREFIX=/usr/local (BUILD=$BUILD)"
$MAKE --no-print-directory BUILD="$BUILD" install DESTDIR="$PWD/$ROOT" PREFIX=/usr/local \
	>"$OUT/cache/install.log" 2>&1 || {
	tail -n 20 "$OUT/cache/install.log" >&2
	die "make install failed (log: $OUT/cache/install.log)"
}
grep -E '^install -m' "$OUT/cache/install.log" | sed 's/^/    /'

chroot_run() { chroot "$ROOT" "$@"; }

# Missing shared libraries show up here rather than as a failed first boot.
for bin in "$ROOT"/usr/local/bin/*; do
	if chroot_run ldd "/usr/local/bin/${bin##*/}" | grep -q 'not found'; then
		chroot_run ldd "/usr/local/bin/${bin##*/}" | grep 'not found' >&2
		die "/usr/local/bin/${bin##*/} needs libraries the image lacks: add their packages to PACKAGES"
	fi
done

step "configuration: partition CPUs \"$PARTITION_CPUS\", kv on huge pages (${KV_MEMORY_MB} MiB)"
cfg=$ROOT/etc/duet/duet.cfg
edit() { # edit SED-EXPRESSION WHAT: exactly one line must change
	local before
	before=$(md5sum <"$cfg")
	sed -i "$1" "$cfg"
	[ "$(md5sum <"$cfg")" != "$before" ] || die "could not set $2 in $cfg (etc/duet.cfg changed shape?)"
}
edit "0,/^\([[:space:]]*cpus[[:space:]]*=[[:space:]]*\)\"[^\"]*\";/s//\1\"$PARTITION_CPUS\";/" \
	"partitions[0].cpus"
edit 's/^\([[:space:]]*hugepages[[:space:]]*=[[:space:]]*\)false;/\1true;/' "kv.hugepages"
edit "s/^\([[:space:]]*memory_mb[[:space:]]*=[[:space:]]*\)[0-9]*;/\1$KV_MEMORY_MB;/" "kv.memory_mb"
sed -i "1i # The appliance image's configuration: etc/duet.cfg with partition cpus = \"$PARTITION_CPUS\",\\
# kv.hugepages = true and kv.memory_mb = $KV_MEMORY_MB (images/build.sh).  After editing\\
# partitions' cpus or kv, re-derive the kernel command line: duet-cmdline /etc/duet/duet.cfg\\
# (see images/README.md).\\
" "$cfg"
if ! chroot_run /usr/local/bin/duetd -c /etc/duet/duet.cfg --check --print-config \
	>"$OUT/duet.cfg" 2>"$OUT/cache/check.log"; then
	cat "$OUT/cache/check.log" >&2
	die "duetd --check rejects the image's configuration"
fi
sed 's/^/    /' "$OUT/cache/check.log"

# --- 4. appliance tuning ---------------------------------------------------------------------
TUNING=$(images/cmdline.sh --cpus "$CPUS" "$OUT/duet.cfg")
HOUSEKEEPING=$(images/cmdline.sh --cpus "$CPUS" --housekeeping "$OUT/duet.cfg")
ROOT_UUID=$(uuidgen)
CMDLINE="root=UUID=$ROOT_UUID rw console=tty0 console=ttyS0,115200 panic=10 $TUNING"
step "kernel command line: $CMDLINE"
step "housekeeping CPUs (CPUAffinity=): ${HOUSEKEEPING:-all}"

install -m 0755 images/cmdline.sh "$ROOT/usr/local/sbin/duet-cmdline"
install -m 0755 images/apply-tuning.sh "$ROOT/usr/local/sbin/duet-apply-tuning"
install -m 0755 images/selftest.sh "$ROOT/usr/local/sbin/duet-selftest"
install -m 0644 images/duet-selftest.service "$ROOT/usr/local/lib/systemd/system/"
mkdir -p "$ROOT/etc/kernel"
echo "$CMDLINE" >"$ROOT/etc/kernel/cmdline"

mkdir -p "$ROOT/etc/systemd/system.conf.d"
if [ -n "$HOUSEKEEPING" ]; then
	cat >"$ROOT/etc/systemd/system.conf.d/10-duet-housekeeping.conf" <<EOF
# Housekeeping CPUs: every process starts here unless it pins itself elsewhere.  duetd's
# partition workers pin their threads to the partition's cpus, which the kernel command line
# isolates (isolcpus=, nohz_full=, rcu_nocbs=).  Derived from /etc/duet/duet.cfg by
# duet-cmdline --housekeeping (images/build.sh).
[Manager]
CPUAffinity=${HOUSEKEEPING//,/ }
EOF
fi

# --- 5. system: groups, login, first boot, console, network ----------------------------------
step "system: groups duet and duet-admin, hostname, fstab, machine-id, units"
chroot_run groupadd --system duet
chroot_run groupadd --system duet-admin
# The operator login: root with an empty password.  There is no network login (no sshd), so
# it is reachable only on the local consoles (serial ttyS0 and tty1).  See images/README.md.
chroot_run passwd -d root >/dev/null
echo duet >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tduet\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
	>"$ROOT/etc/hosts"
cat >"$ROOT/etc/fstab" <<EOF
# <file system>  <mount point>  <type>  <options>  <dump>  <pass>
UUID=$ROOT_UUID  /  ext4  errors=remount-ro  0  1
EOF
# "uninitialized": every node that boots the image makes its own machine ID on its first
# boot (written once the root filesystem is writable), and the boot counts as the first one.
printf 'uninitialized\n' >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
ln -sf /etc/machine-id "$ROOT/var/lib/dbus/machine-id"
# No questions on first boot: systemd-firstboot never runs, and presets keep our units on.
chroot_run systemctl -q mask systemd-firstboot.service
mkdir -p "$ROOT/etc/systemd/system-preset"
cat >"$ROOT/etc/systemd/system-preset/10-duet.preset" <<'EOF'
# Applied on the first boot (machine-id "uninitialized"): keep the appliance's units on.
enable duetd.service
enable duet-selftest.service
enable serial-getty@.service ttyS0
enable systemd-networkd.service
EOF
cat >"$ROOT/etc/systemd/network/80-duet-dhcp.network" <<'EOF'
# Wired interfaces get an address by DHCP (the API itself is local: UNIX sockets).
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
chroot_run systemctl -q enable duetd.service duet-selftest.service serial-getty@ttyS0.service \
	systemd-networkd.service
# No one waits for the network: duetd serves on UNIX sockets.
chroot_run systemctl -q mask systemd-networkd-wait-online.service
# The image is one fixed build: no apt timers waking up on an inference node.
chroot_run systemctl -q mask apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true

# --- 6. kernel and initrd for direct boot ----------------------------------------------------
kernel=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$ROOT/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no kernel in $ROOT/boot (linux-image-amd64 not installed?)"
[ -n "$initrd" ] || die "no initrd in $ROOT/boot (initramfs-tools did not run?)"
step "kernel ${kernel##*/}, initrd ${initrd##*/}"
cp "$kernel" "$OUT/vmlinuz"
cp "$initrd" "$OUT/initrd.img"
echo "$CMDLINE" >"$OUT/cmdline.txt"
echo "$ROOT_UUID" >"$OUT/root-uuid"

# --- 7. rootfs.ext4 from the folder (mke2fs -d) ----------------------------------------------
# Room to grow: a third more than the files, at least 256 MiB free.
used_mb=$(du -s -B1M --apparent-size "$ROOT" | cut -f1)
free_mb=$((used_mb / 3 > 256 ? used_mb / 3 : 256))
root_mb=$(((used_mb + free_mb + 3) / 4 * 4))
step "rootfs.ext4: ${used_mb} MiB of files in a ${root_mb} MiB ext4 (mke2fs -d)"
rm -f "$OUT/rootfs.ext4"
mke2fs -q -F -t ext4 -L duet-root -U "$ROOT_UUID" -d "$ROOT" -E root_owner=0:0 \
	"$OUT/rootfs.ext4" "${root_mb}M"
e2fsck -f -n "$OUT/rootfs.ext4" >"$OUT/cache/e2fsck.log" 2>&1 ||
	die "e2fsck finds errors in rootfs.ext4: $OUT/cache/e2fsck.log"

# --- 8. the ESP: systemd-boot, kernel, initrd, loader entries (mkfs.vfat + mcopy) ------------
kmb=$(( ($(stat -c %s "$kernel") + $(stat -c %s "$initrd")) >> 20 ))
esp_mb=$(( kmb * 2 + 64 > 128 ? (kmb * 2 + 64 + 63) / 64 * 64 : 128 )) # room for a second kernel
step "ESP: ${esp_mb} MiB FAT32 with systemd-boot, the kernel and initrd (mkfs.vfat + mcopy)"
esp=$OUT/cache/esp.img
rm -f "$esp"
mkfs.vfat -F 32 -n DUET-ESP -C "$esp" $((esp_mb * 1024)) >/dev/null
entries=$OUT/cache/entries
rm -rf "$entries"
mkdir -p "$entries"
cat >"$entries/loader.conf" <<'EOF'
default duet.conf
timeout 2
console-mode keep
editor no
EOF
cat >"$entries/duet.conf" <<EOF
title   Duet appliance
linux   /duet/vmlinuz
initrd  /duet/initrd.img
options $CMDLINE
EOF
cat >"$entries/duet-selftest.conf" <<EOF
title   Duet appliance (self-test, then power off)
linux   /duet/vmlinuz
initrd  /duet/initrd.img
options $CMDLINE duet.selftest=1
EOF
export MTOOLS_SKIP_CHECK=1
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/loader ::/loader/entries ::/duet
mcopy -i "$esp" "$SDBOOT" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$SDBOOT" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$esp" "$entries/loader.conf" ::/loader/loader.conf
mcopy -i "$esp" "$entries/duet.conf" "$entries/duet-selftest.conf" ::/loader/entries/
mcopy -i "$esp" "$kernel" ::/duet/vmlinuz
mcopy -i "$esp" "$initrd" ::/duet/initrd.img

# --- 9. the GPT disk: sfdisk on a plain file, dd at the partition offsets --------------------
# 1 MiB alignment; the last MiB holds the backup GPT.
disk=$OUT/duet-disk.img
esp_start=2048
esp_sectors=$((esp_mb * 2048))
root_start=$((esp_start + esp_sectors))
root_sectors=$((root_mb * 2048))
disk_mb=$((1 + esp_mb + root_mb + 1))
step "duet-disk.img: ${disk_mb} MiB GPT: ESP at 1 MiB, root at $((root_start / 2048)) MiB"
rm -f "$disk"
truncate -s "${disk_mb}M" "$disk"
sfdisk --quiet "$disk" <<EOF
label: gpt
unit: sectors
first-lba: 2048
start=$esp_start, size=$esp_sectors, type=$ESP_TYPE, name="duet-esp"
start=$root_start, size=$root_sectors, type=$ROOT_TYPE, name="duet-root"
EOF
dd if="$esp" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$OUT/rootfs.ext4" of="$disk" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
sfdisk --dump "$disk" | sed -n 's/^\(.*img[0-9]\) : /    \1 : /p'

# --- 10. sizes ------------------------------------------------------------------------------
step "compressing duet-disk.img to duet-disk.img.zst (zstd -T0 -3)"
zstd -q -f -T0 -3 "$disk" -o "$disk.zst"
report() { # report FILE: raw size, allocated, zstd -3 size
	local f=$1 raw alloc z
	raw=$(stat -c %s "$f")
	alloc=$(($(stat -c %b "$f") * $(stat -c %B "$f")))
	if [ -e "$f.zst" ]; then z=$(stat -c %s "$f.zst"); else z=$(zstd -q -T0 -3 -c "$f" | wc -c); fi
	awk -v n="${f##*/}" -v r="$raw" -v a="$alloc" -v z="$z" 'BEGIN {
		printf "  %-16s %8.1f MiB raw %8.1f MiB allocated %8.1f MiB zstd -3\n", n, r / 1048576,
			a / 1048576, z / 1048576 }'
}
step "done in $(($(date +%s) - t0))s; sizes:"
for f in "$OUT/rootfs.ext4" "$OUT/vmlinuz" "$OUT/initrd.img" "$disk"; do
	report "$f"
done
echo "image: boot it with 'make image-test', or see images/README.md"
