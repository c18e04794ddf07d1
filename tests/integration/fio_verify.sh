#!/bin/sh
# fio_verify.sh - fio randrw with verify=crc32c inside a guest, through fio-blkfront.so and
# blkbackd, once with each backend I/O engine (io_uring, libaio): fio must finish with no error
# (verify_fatal), and blkbackd's per-vbd counters must equal what fio says it issued.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-fio-verify.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
. "$SLUICE_TOP/tests/integration/lib/fio.sh"
HV="$T/hv"
HVPID=""
BBPID=""

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 256M >/dev/null || fail "domain create"

for engine in io_uring libaio; do
	POOL="$T/pool-$engine"
	"$BIN/blkbackd" --hv-dir "$HV" --pool "$POOL" --engine "$engine" \
		2>"$T/blkbackd-$engine.log" &
	BBPID=$!
	wait_sock "$POOL/blkbackd.sock"
	"$BIN/blkctl" --pool "$POOL" create vol1 --size 64M || fail "create ($engine)"
	"$BIN/blkctl" --pool "$POOL" attach vol1 g1 xvda || fail "attach ($engine)"

	env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
		fio --ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 \
		--filename=xvda --name="verify-$engine" --rw=randrw --bs=4k --iodepth=32 \
		--size=24M --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--output-format=json --output="$T/fio-$engine.json" 2>"$T/fio-$engine.err" ||
		fail "fio through the engine ($engine backend)"
	"$BIN/blkctl" --pool "$POOL" stats g1 xvda --json >"$T/stats-$engine.json" ||
		fail "stats ($engine)"

	python3 - "$T/fio-$engine.json" "$T/stats-$engine.json" "$engine" <<'EOF' ||
import json, sys

fio = json.load(open(sys.argv[1]))
job = fio["jobs"][0]
stats = json.load(open(sys.argv[2]))
vbds = stats.get("vbds", stats) if isinstance(stats, dict) else stats
if isinstance(vbds, dict):
    vbds = [vbds]
vbd = [v for v in vbds if v.get("vdev") in ("xvda", 51712, "51712")][0]

rd, wr = job["read"]["total_ios"], job["write"]["total_ios"]
print("%s: fio error=%d read ios=%d write ios=%d; blkbackd rd_req=%d wr_req=%d errors=%d" %
      (sys.argv[3], job["error"], rd, wr, vbd["rd_req"], vbd["wr_req"], vbd.get("errors", 0)))
assert job["error"] == 0, "fio reported an error"
assert wr > 0 and rd > wr / 4, "fio did too little I/O to mean anything"
# Every 4 KiB I/O is one blkif request: the backend must have seen exactly as many.
assert vbd["rd_req"] == rd, "rd_req %d != fio reads %d" % (vbd["rd_req"], rd)
assert vbd["wr_req"] == wr, "wr_req %d != fio writes %d" % (vbd["wr_req"], wr)
assert vbd.get("errors", 0) == 0, "backend counted errors"
EOF
		fail "counts ($engine)"

	"$BIN/blkctl" --pool "$POOL" detach g1 xvda || fail "detach ($engine)"
	kill "$BBPID" 2>/dev/null || fail "blkbackd ($engine) died during the test"
	wait "$BBPID" || fail "blkbackd ($engine) exited badly"
	BBPID=""
done
echo "fio_verify: ok"
