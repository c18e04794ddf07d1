#!/bin/sh
# fio_resize.sh - grow a disk while a guest runs a verify job on it. One fio run, one guest
# connection: job 1 writes and verifies the first 32 MiB while blkctl grows the volume from 32 to
# 64 MiB; the engine must report the new capacity live (libblkfront saw the backend rewrite
# sectors + state). Job 2 (stonewall, same connection) then writes past the old end and reads it
# back with verify. Both jobs must finish without any error.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-fio-resize.XXXXXX)
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

# create_serialize=0: each job sizes its files when it starts, so job 2 sizes xvda after the
# resize, through the connection job 1 kept alive. --thread because then fio decides process or
# thread before the engine's setup runs (see tools/fio_blkfront.c). Job 1 is rate-limited so its
# write phase (about 3 s) outlasts the resize by far; the verify phase follows.
env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
	fio --thread --create_serialize=0 --output-format=json --output="$T/fio.json" \
	--ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 --filename=xvda \
	--name=during --rw=randwrite --bs=4k --iodepth=16 --size=32M --rate_iops=3000 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 \
	--name=past-old-end --stonewall --rw=write --bs=64k --iodepth=8 --offset=32M --size=32M \
	--verify=crc32c --do_verify=1 --verify_fatal=1 \
	2>"$T/fio.err" &
FIOPID=$!

# Resize once the guest is really writing (bounded wait for the condition, not a fixed sleep).
i=0
while [ "$(vbd_stat g1 xvda wr_req)" -eq 0 ]; do
	i=$((i + 1))
	[ $i -gt 200 ] && fail "the guest never started writing"
	kill -0 "$FIOPID" 2>/dev/null || fail "fio ended before any write reached the backend"
	sleep 0.05
done
"$BIN/blkctl" --pool "$POOL" resize vol1 64M || fail "resize"

rc=0
wait "$FIOPID" || rc=$?
FIOPID=""
[ "$rc" -eq 0 ] || fail "fio exited with $rc"
grep -q "xvda: capacity changed from 33554432 to 67108864 bytes" "$T/fio.err" ||
	fail "the guest did not see the new capacity while running"
[ "$(grep -c 'xvda: connected' "$T/fio.err")" -eq 1 ] ||
	fail "the guest reconnected: the resize was not seen live"

python3 - "$T/fio.json" <<'EOF' || fail "fio results"
import json, sys

jobs = {j["jobname"]: j for j in json.load(open(sys.argv[1]))["jobs"]}
during, past = jobs["during"], jobs["past-old-end"]
print("during: error=%d writes=%d verify reads=%d; past-old-end: error=%d writes=%d reads=%d" %
      (during["error"], during["write"]["total_ios"], during["read"]["total_ios"],
       past["error"], past["write"]["total_ios"], past["read"]["total_ios"]))
assert during["error"] == 0 and past["error"] == 0
assert during["write"]["total_ios"] == 8192 and during["read"]["total_ios"] == 8192
# 32 MiB past the old end in 64 KiB writes, all read back by verify.
assert past["write"]["total_ios"] == 512, past["write"]["total_ios"]
assert past["read"]["total_ios"] == 512, past["read"]["total_ios"]
EOF
echo "fio_resize: ok"
