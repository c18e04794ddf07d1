#!/bin/sh
# deps.sh - install every Debian package Sluice needs to build, test, demo and benchmark.
# Idempotent and quiet when everything is already there: `make deps` runs it before demo and check.
set -eu

PKGS="build-essential pkg-config clang libclang-rt-14-dev
libxen-dev xenstore-utils
liburing-dev libaio-dev liblmdb-dev lmdb-utils libssl-dev libcunit1-dev libjson-c-dev
fio dpkg-dev python3
nbdkit qemu-system-common linux-perf gnuplot-nox
debootstrap e2fsprogs"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing packages:$missing; run 'make deps' as root (or install them)" >&2
		exit 1
	fi
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	# An apt index older than a day may name versions the archive no longer has.
	if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
		apt-get update -qq
	fi
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# Always: a fresh checkout has no third_party/fio-src even when every package is installed.
sh "$(dirname "$0")/fio-src.sh"
