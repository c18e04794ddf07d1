#!/bin/sh
# blkback_sigterm.sh - SIGTERM of blkbackd during I/O loses no acknowledged write: a guest
# writes (iodepth 32) and logs every write the backend acknowledged; once hundreds are logged,
# blkbackd gets SIGTERM, must complete what is in flight, close the frontend and exit 0; every
# logged block is then read back from the volume's image in dom0. Also: a second blkbackd on
# the same pool is refused while the first runs, and a restarted blkbackd serves the guest again.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
GUEST="$BIN/../tests/bb-guest"
T=$(mktemp -d /tmp/sluice-bb-sigterm.XXXXXX)
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

ctl() { "$GUEST" ctl --pool "$POOL" "$1" >>"$T/ctl.out"; }

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 128M >/dev/null || fail "domain create"
"$GUEST" create --pool "$POOL" --vol vol1 --size 268435456 || fail "create vol1"

start_blkbackd

# One daemon per pool.
if "$BIN/blkbackd" --hv-dir "$HV" --pool "$POOL" 2>"$T/second.log"; then
	fail "a second blkbackd on the same pool was not refused"
fi
grep -q "already served" "$T/second.log" || fail "the second blkbackd did not say why"
ctl '{"cmd":"ping"}' || fail "the first blkbackd was disturbed"

ctl '{"cmd":"attach","vol":"vol1","domain":"g1","vdev":"xvda"}' || fail "attach"
"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvda --log "$T/acked" --depth 32 \
	>"$T/writer.out" 2>&1 &
WPID=$!
wait_lines "$T/acked" 500

kill -TERM "$BBPID"
wait "$BBPID" || { BBPID=""; fail "blkbackd did not exit 0 on SIGTERM during I/O"; }
BBPID=""
grep -q "stopped" "$T/blkbackd.log" || fail "blkbackd did not log an orderly stop"
[ ! -e "$POOL/blkbackd.sock" ] || fail "blkbackd left its socket behind"

kill -TERM "$WPID"
wait "$WPID" || true
WPID=""
cat "$T/writer.out"
"$GUEST" check --image "$POOL/vols/vol1.img" --log "$T/acked" --min 500 ||
	fail "an acknowledged write was lost"

# A restarted daemon serves the same disk; a new writer gets its writes acknowledged.
"$BIN/blkbackd" --hv-dir "$HV" --pool "$POOL" 2>"$T/blkbackd2.log" &
BBPID=$!
wait_sock "$POOL/blkbackd.sock"
"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvda --log "$T/acked2" --count 300 \
	--depth 8 >"$T/writer2.out" 2>&1 || fail "the guest could not write after the restart"
"$GUEST" check --image "$POOL/vols/vol1.img" --log "$T/acked2" --min 300 ||
	fail "writes after the restart are not on disk"
kill -TERM "$BBPID"
wait "$BBPID" || { BBPID=""; fail "the restarted blkbackd did not exit 0"; }
BBPID=""
echo "blkback_sigterm: ok"
