#!/bin/sh
# fio_guest_crash.sh - the guest process dies (SIGKILL) in the middle of I/O, leaving its vbd
# Connected with rings and grants the backend still maps. The next guest process must find that
# stale connection, reset it (Closed, then Initialising: blkbackd unmaps and goes InitWait),
# connect afresh and run a clean verify job.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-fio-crash.XXXXXX)
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

env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
	fio --ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 \
	--filename=xvda --name=doomed --rw=randwrite --bs=4k --iodepth=32 --size=32M \
	--rate_iops=3000 --output="$T/doomed.out" 2>"$T/doomed.err" &
FIOPID=$!
i=0
while [ "$(vbd_stat g1 xvda wr_req)" -eq 0 ]; do
	i=$((i + 1))
	[ $i -gt 200 ] && fail "the guest never started writing"
	kill -0 "$FIOPID" 2>/dev/null || fail "fio ended before any write reached the backend"
	sleep 0.05
done
kill -KILL "$FIOPID" 2>/dev/null || fail "fio ended before we killed it"
wait "$FIOPID" 2>/dev/null || true
FIOPID=""
st=$(XENSTORED_PATH="$HV/xenstore.sock" xenstore-read /local/domain/1/device/vbd/51712/state)
[ "$st" = 4 ] || fail "expected the dead guest's vbd still Connected, found state $st"

env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
	fio --output-format=json --output="$T/fio.json" \
	--ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 --filename=xvda \
	--name=after --rw=randrw --bs=4k --iodepth=32 --size=16M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 2>"$T/fio.err" </dev/null || fail "fio after the crash"
python3 - "$T/fio.json" <<'EOF' || fail "fio results"
import json, sys

job = json.load(open(sys.argv[1]))["jobs"][0]
print("after crash: error=%d reads=%d writes=%d" %
      (job["error"], job["read"]["total_ios"], job["write"]["total_ios"]))
assert job["error"] == 0 and job["write"]["total_ios"] > 0
EOF
grep -q "frontend reinitialising" "$T/blkbackd.log" ||
	fail "blkbackd was not asked to reconnect"
echo "fio_guest_crash: ok"
