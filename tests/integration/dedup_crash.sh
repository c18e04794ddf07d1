#!/bin/sh
# dedup_crash.sh - kill -9 of blkbackd while a guest writes to a dedup volume: every write the
# guest saw acknowledged is in the volume afterwards. Checked twice: offline (blkctl opens the
# store, which replays its journal, and exports the volume) and after a daemon restart that
# serves the same disk to a new writer. fsck is clean both times.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
GUEST="$BIN/../tests/bb-guest"
T=$(mktemp -d /tmp/sluice-dedup-crash.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""
WPID=""

wait_lines() { # wait_lines FILE N: FILE has at least N lines (bounded: 20 s)
	i=0
	while [ ! -f "$1" ] || [ "$(wc -l <"$1")" -lt "$2" ]; do
		i=$((i + 1))
		[ $i -gt 400 ] && fail "$1 did not reach $2 lines"
		kill -0 "$WPID" 2>/dev/null || fail "the writer died early"
		sleep 0.05
	done
}

ctl() { "$BIN/blkctl" --pool "$POOL" "$@"; }

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 128M >/dev/null || fail "domain create"

start_blkbackd
ctl create dvol --size 256M --store dedup >/dev/null || fail "create"
ctl attach dvol g1 xvda >/dev/null || fail "attach"

"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvda --log "$T/acked" --depth 32 \
	>"$T/writer.out" 2>&1 &
WPID=$!
wait_lines "$T/acked" 2000

kill -KILL "$BBPID"
wait "$BBPID" 2>/dev/null || true
BBPID=""
kill -TERM "$WPID"
wait "$WPID" || true
WPID=""
cat "$T/writer.out"

# Offline: opening the store recovers it; the export holds every acknowledged write.
ctl export dvol "$T/after-crash.img" >/dev/null 2>&1 || fail "offline export after the crash"
"$GUEST" check --image "$T/after-crash.img" --log "$T/acked" --min 2000 ||
	fail "an acknowledged write was lost"
ctl fsck >"$T/fsck1.out" || fail "fsck after the crash"

# A restarted daemon (its socket file is stale after kill -9) serves the same disk.
rm -f "$POOL/blkbackd.sock"
"$BIN/blkbackd" --hv-dir "$HV" --pool "$POOL" 2>"$T/blkbackd2.log" &
BBPID=$!
wait_sock "$POOL/blkbackd.sock"
"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvda --log "$T/acked2" --count 300 \
	--depth 8 >"$T/writer2.out" 2>&1 || fail "the guest could not write after the restart"
ctl export dvol "$T/after-restart.img" >/dev/null || fail "export through the daemon"
"$GUEST" check --image "$T/after-restart.img" --log "$T/acked2" --min 300 ||
	fail "writes after the restart are not in the volume"
ctl fsck >"$T/fsck2.out" || fail "fsck through the restarted daemon"
kill -TERM "$BBPID"
wait "$BBPID" || { BBPID=""; fail "the restarted blkbackd did not exit 0"; }
BBPID=""
echo "dedup_crash: ok"
