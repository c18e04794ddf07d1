#!/bin/sh
# hv_shutdown.sh - hvsimd's lifecycle in its directory: SIGTERM and SIGINT exit 0 and remove
# every socket, link and domain directory; after a crash (SIGKILL) a new hvsimd replaces the
# stale sockets and starts with no guest domains.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-hv-shutdown.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
HV="$T/hv"
HVPID=""

# start: a new hvsimd, ready when it answers (a crashed one's socket files may already exist).
start() {
	"$BIN/hvsimd" --dir "$HV" 2>>"$T/hvsimd.log" &
	HVPID=$!
	i=0
	until "$BIN/hvctl" --dir "$HV" domain list >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -gt 200 ] && fail "hvsimd did not come up"
		kill -0 "$HVPID" 2>/dev/null || fail "hvsimd exited"
		sleep 0.05
	done
}

populate() {
	"$BIN/hvctl" --dir "$HV" domain create a >/dev/null
	"$BIN/hvctl" --dir "$HV" domain create b --mem 64M >/dev/null
	[ "$(find "$HV" -type s | wc -l)" -eq 6 ] || fail "expected 6 sockets"
}

# stop SIG: the daemon exits 0 on SIG and leaves no socket behind.
stop() {
	kill -"$1" "$HVPID"
	rc=0
	wait "$HVPID" || rc=$?
	HVPID=""
	[ "$rc" -eq 0 ] || fail "hvsimd exited $rc on SIG$1"
	left=$(find "$HV" -type s -o -type l | wc -l)
	[ "$left" -eq 0 ] || fail "SIG$1 left: $(find "$HV" -type s -o -type l)"
	[ ! -e "$HV/domains" ] && [ ! -e "$HV/names" ] || fail "SIG$1 left its directories"
}

start
populate
stop TERM

start
populate
stop INT

# A crash leaves everything behind; the next instance cleans up and serves.
start
populate
kill -KILL "$HVPID"
wait "$HVPID" 2>/dev/null || true
HVPID=""
[ -S "$HV/hv.sock" ] && [ -L "$HV/names/a" ] || fail "the crash should have left files"
start
[ ! -e "$HV/names/a" ] && [ ! -e "$HV/domains/1" ] || fail "stale domain files survived"
"$BIN/hvctl" --dir "$HV" domain list | grep -q Domain-0 || fail "restarted hvsimd does not serve"
[ "$("$BIN/hvctl" --dir "$HV" domain create c)" -ge 1 ] || fail "create after restart"
stop TERM
echo "hv_shutdown: ok"
