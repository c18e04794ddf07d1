#!/bin/sh
# fio-src.sh - fetch the Debian source of the INSTALLED fio into third_party/fio-src and run its
# ./configure, so tools/fio_blkfront.c compiles against exactly the headers (ioengines.h, fio.h,
# optgroup.h, config-host.h) of the fio that will dlopen it: fio's engine ABI is not stable
# across versions (it checks FIO_IOOPS_VERSION, and struct thread_data moves between releases).
#
# If no apt source offers source packages for the archive that fio came from, a deb-src stanza
# for that same archive is added (deb822, /etc/apt/sources.list.d/sluice-deb-src.sources).
# Idempotent and quiet when the tree for the installed version is already there.
set -eu
export LC_ALL=C

TOP=$(cd "$(dirname "$0")/.." && pwd)
DEST="$TOP/third_party/fio-src"
STAMP="$DEST/.sluice-fio-version"

die() {
	echo "fio-src: $*" >&2
	exit 1
}

ver=$(dpkg-query -W -f='${Version}' fio 2>/dev/null) || true
[ -n "$ver" ] || die "fio is not installed; run 'make deps' as root first"

if [ -f "$DEST/config-host.h" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$ver" ]; then
	exit 0
fi

command -v dpkg-source >/dev/null 2>&1 || die "dpkg-source missing (package dpkg-dev); run 'make deps'"

# The archive that provides the installed version: the first repository line under the "***"
# row of apt-cache policy, e.g. "500 http://deb.debian.org/debian bookworm/main amd64 Packages".
archive=$(apt-cache policy fio 2>/dev/null | awk '
	/\*\*\*/ { mine = 1; next }
	mine && /^ +[0-9]+ +[a-z]+:/ { print $2, $3; exit }
	mine && /^ +\*\*\*|^ +[^ 0-9]/ { mine = 0 }')
uri=${archive%% *}
suite_comp=${archive#* }
suite=${suite_comp%%/*}
comp=${suite_comp#*/}
[ -n "$archive" ] || die "cannot tell which apt archive provides fio $ver (apt-cache policy fio)"

has_deb_src() { # has_deb_src URI: is there an enabled deb-src entry for URI?
	u=${1%/}
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		grep -Eq "^[[:space:]]*deb-src([[:space:]]+\[[^]]*\])?[[:space:]]+$u/?[[:space:]]" "$f" &&
			return 0
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		# deb822: stanzas separated by blank lines; one that lists deb-src among its Types and
		# our URI among its URIs, and is not disabled.
		awk -v u="$u" '
			function flush() { if (src && hit && !off) found = 1; src = hit = off = 0 }
			/^[[:space:]]*$/ { flush(); next }
			/^#/ { next }
			tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb-src") src = 1 }
			tolower($1) == "uris:" { for (i = 2; i <= NF; i++) { x = $i; sub(/\/$/, "", x); if (x == u) hit = 1 } }
			tolower($1) == "enabled:" && tolower($2) == "no" { off = 1 }
			END { flush(); exit !found }' "$f" && return 0
	done
	return 1
}

need_update=0
if ! has_deb_src "$uri"; then
	[ "$(id -u)" -eq 0 ] ||
		die "no deb-src entry for $uri; run 'make deps' as root so one can be added"
	# Keep the same signing key as the binary entry for this archive, if it names one.
	key=""
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		key=$(awk -v u="${uri%/}" '
			function flush() { if (hit && k != "" && !done) { print k; done = 1 } hit = 0; k = "" }
			/^[[:space:]]*$/ { flush(); next }
			tolower($1) == "uris:" { for (i = 2; i <= NF; i++) { x = $i; sub(/\/$/, "", x); if (x == u) hit = 1 } }
			tolower($1) == "signed-by:" { k = $2 }
			END { flush() }' "$f")
		[ -n "$key" ] && break
	done
	{
		echo "# Added by Sluice tools/fio-src.sh: source packages, to build the fio engine"
		echo "# against the headers of the installed fio."
		echo "Types: deb-src"
		echo "URIs: $uri"
		echo "Suites: $suite"
		echo "Components: $comp"
		[ -n "$key" ] && echo "Signed-By: $key"
	} >/etc/apt/sources.list.d/sluice-deb-src.sources
	echo "fio-src: added deb-src for $uri $suite $comp"
	need_update=1
fi

mkdir -p "$TOP/third_party"
work=$(mktemp -d "$TOP/third_party/.fio-src.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

fetch() {
	(cd "$work" && apt-get source -qq --only-source "fio=$ver" >"$work/apt.log" 2>&1)
}
if [ "$need_update" -eq 1 ] || ! fetch; then
	apt-get update -qq >/dev/null 2>&1 || true
	rm -rf "${work:?}"/*
	fetch || {
		cat "$work/apt.log" >&2
		die "apt-get source fio=$ver failed"
	}
fi

src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | head -1)
[ -n "$src" ] || die "apt-get source produced no fio-* directory"
(cd "$src" && ./configure >"$work/configure.log" 2>&1) || {
	cat "$work/configure.log" >&2
	die "fio ./configure failed"
}
[ -f "$src/config-host.h" ] || die "fio ./configure wrote no config-host.h"
echo "$ver" >"$src/.sluice-fio-version"

rm -rf "$DEST"
mv "$src" "$DEST"
