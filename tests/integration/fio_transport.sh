#!/bin/sh
# fio_transport.sh - each transport the engine can negotiate with blkbackd carries verified data:
# one-page ring with direct 11-page requests and no persistent grants (a stock Linux guest),
# then the fast path (16-page rings, 2 queues, indirect descriptors, persistent grants), then a
# small indirect limit. 128 KiB I/O (32 pages) shows the request shape in blkbackd's counters:
# 3 ring requests per I/O when direct, 1 with indirect descriptors of 256 pages, 2 with 16.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-fio-transport.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
. "$SLUICE_TOP/tests/integration/lib/fio.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 256M >/dev/null || fail "domain create"
start_blkbackd --max-queues 2
"$BIN/blkctl" --pool "$POOL" create vol1 --size 64M || fail "create"

n=0
# name, ring order, queues, indirect pages, persistent, ring requests per 128 KiB I/O, and what
# the guest must log when it connects.
while read -r name order queues ind pers per_io want; do
	n=$((n + 1))
	vdev=xvd$(echo "abcdef" | cut -c"$n")
	"$BIN/blkctl" --pool "$POOL" attach vol1 g1 "$vdev" >/dev/null || fail "attach $vdev"
	env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
		fio --ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 \
		--filename="$vdev" --name="$name" --ring_order="$order" --queues="$queues" \
		--indirect_segs="$ind" --persistent="$pers" --rw=randrw --bs=128k --iodepth=16 \
		--size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--output-format=json --output="$T/fio-$name.json" 2>"$T/fio-$name.err" </dev/null ||
		fail "fio, $name transport"
	grep -qF "$want" "$T/fio-$name.err" || fail "$name: did not negotiate '$want'"
	"$BIN/blkctl" --pool "$POOL" stats g1 "$vdev" --json >"$T/stats-$name.json" ||
		fail "stats $name"
	python3 - "$T/fio-$name.json" "$T/stats-$name.json" "$name" "$per_io" <<'EOF' ||
import json, sys

job = json.load(open(sys.argv[1]))["jobs"][0]
s = json.load(open(sys.argv[2]))
vbds = s.get("vbds", s) if isinstance(s, dict) else s
vbd = vbds[0] if isinstance(vbds, list) else vbds
per = int(sys.argv[4])
rd, wr = job["read"]["total_ios"], job["write"]["total_ios"]
print("%s: fio error=%d reads=%d writes=%d; blkbackd rd_req=%d wr_req=%d" %
      (sys.argv[3], job["error"], rd, wr, vbd["rd_req"], vbd["wr_req"]))
assert job["error"] == 0
assert vbd["rd_req"] == per * rd, "rd_req %d, want %d x %d" % (vbd["rd_req"], per, rd)
assert vbd["wr_req"] == per * wr, "wr_req %d, want %d x %d" % (vbd["wr_req"], per, wr)
assert vbd["rd_sect"] == 256 * rd and vbd["wr_sect"] == 256 * wr
EOF
		fail "request shape, $name transport"
	"$BIN/blkctl" --pool "$POOL" detach g1 "$vdev" >/dev/null || fail "detach $vdev"
done <<'TABLE'
stock 0 1 0 0 3 1 queue(s) of 32 slots, 11 segments per request, flush
fast 4 2 256 1 1 2 queue(s) of 512 slots, 256 segments per request (indirect), persistent grants
small 2 1 16 1 2 1 queue(s) of 128 slots, 16 segments per request (indirect), persistent grants
TABLE
echo "fio_transport: ok"
