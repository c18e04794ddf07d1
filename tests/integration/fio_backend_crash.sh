#!/bin/sh
# fio_backend_crash.sh - blkbackd dies (SIGKILL, no Closing/Closed handshake) and is started
# again while a guest runs a verify job. The new blkbackd finds the frontend Connected and
# attaches to the live ring where it stands, answering what the dead one left unanswered;
# libblkfront keeps its ring (no reconnect). fio must finish with no error and every block it
# wrote must verify.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-fio-bbcrash.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
. "$SLUICE_TOP/tests/integration/lib/fio.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""
FIOPID=""

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 256M >/dev/null || fail "domain create"
start_blkbackd
"$BIN/blkctl" --pool "$POOL" create vol1 --size 32M || fail "create"
"$BIN/blkctl" --pool "$POOL" attach vol1 g1 xvda || fail "attach"

# Rate-limited so the write phase outlasts the restart by far (about 3 s); the verify phase
# then reads back every block through the second blkbackd.
env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
	fio --output-format=json --output="$T/fio.json" \
	--ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 --filename=xvda \
	--name=restart --rw=randwrite --bs=4k --iodepth=16 --size=32M --rate_iops=3000 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 2>"$T/fio.err" &
FIOPID=$!

i=0
while [ "$(vbd_stat g1 xvda wr_req)" -eq 0 ]; do
	i=$((i + 1))
	[ $i -gt 200 ] && fail "the guest never started writing"
	kill -0 "$FIOPID" 2>/dev/null || fail "fio ended before any write reached the backend"
	sleep 0.05
done
kill -KILL "$BBPID" 2>/dev/null || fail "blkbackd died before we stopped it"
wait "$BBPID" 2>/dev/null || true
BBPID=""
start_blkbackd

rc=0
wait "$FIOPID" || rc=$?
FIOPID=""
[ "$rc" -eq 0 ] || fail "fio exited with $rc"
[ "$(grep -c 'xvda: connected' "$T/fio.err")" -eq 1 ] ||
	fail "the guest reconnected instead of keeping its ring for the new blkbackd"
[ "$(grep -c 'd1/xvda: connected' "$T/blkbackd.log")" -eq 2 ] ||
	fail "the restarted blkbackd did not attach to the ring"

python3 - "$T/fio.json" <<'EOF' || fail "fio results"
import json, sys

job = json.load(open(sys.argv[1]))["jobs"][0]
print("crash: error=%d writes=%d verify reads=%d" %
      (job["error"], job["write"]["total_ios"], job["read"]["total_ios"]))
assert job["error"] == 0
assert job["write"]["total_ios"] == 8192
assert job["read"]["total_ios"] == 8192, "every written block is read back and verified"
EOF
echo "fio_backend_crash: ok"
