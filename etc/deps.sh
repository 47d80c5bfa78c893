#!/bin/sh
# Install the Debian 12 packages Duet needs, if any are missing.
# Arguments: package:reason pairs ("libconfig-dev:configuration-parser").
# A no-op when everything is present; as root it runs apt-get; otherwise it
# says what is missing and how to install it, and fails.
set -u

missing=""
reasons=""
for spec in "$@"; do
	pkg=${spec%%:*}
	why=$(echo "${spec#*:}" | tr '-' ' ')
	if ! command -v dpkg-query >/dev/null 2>&1; then
		echo "deps: no dpkg here (not Debian?): make sure '$pkg' ($why) or its equivalent is installed"
		continue
	fi
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	case "$status" in
	*"install ok installed"*) ;;
	*)
		missing="$missing $pkg"
		reasons="$reasons
    $pkg: $why"
		;;
	esac
done

if [ -z "$missing" ]; then
	echo "deps: all $# required Debian packages are installed"
	exit 0
fi

echo "deps: missing Debian packages:$reasons"
if [ "$(id -u)" != 0 ]; then
	echo "deps: not root, so not installing them; run as root:"
	echo "    apt-get update && apt-get install -y --no-install-recommends$missing"
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "deps: installing with apt-get:$missing"
# The package lists may be empty or stale on a fresh machine: update once first.
if ! apt-get update -q; then
	echo "deps: apt-get update failed (is a Debian mirror reachable?)"
	exit 1
fi
if ! apt-get install -y -q --no-install-recommends $missing; then
	echo "deps: apt-get install failed for:$missing"
	exit 1
fi
echo "deps: installed:$missing"
