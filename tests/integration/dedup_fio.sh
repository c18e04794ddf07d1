#!/bin/sh
# dedup_fio.sh - fio randrw with verify=crc32c inside a guest, through fio-blkfront.so and
# blkbackd, on a dedup volume (store "dedup": hashed, deduplicated, journaled by dedup/): fio
# must finish with no error (verify_fatal), blkbackd must count no error, and the store must
# pass fsck afterwards. bs is a multiple of 4096: a dedup volume's sector size.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-dedup-fio.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
. "$SLUICE_TOP/tests/integration/lib/fio.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 256M >/dev/null || fail "domain create"

start_blkbackd
"$BIN/blkctl" --pool "$POOL" create dvol --size 64M --store dedup || fail "create"
"$BIN/blkctl" --pool "$POOL" attach dvol g1 xvda || fail "attach"

# Request sizes 4-64 KiB, 4 KiB aligned: single- and multi-block requests, and many overwrites.
env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
	fio --ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 \
	--filename=xvda --name=dedup-verify --rw=randrw --bsrange=4k-64k --bs_unaligned=0 \
	--blockalign=4k --iodepth=16 --size=24M --verify=crc32c --do_verify=1 --verify_fatal=1 \
	--output-format=json --output="$T/fio.json" 2>"$T/fio.err" ||
	fail "fio through the engine on a dedup volume"
"$BIN/blkctl" --pool "$POOL" stats g1 xvda --json >"$T/stats.json" || fail "stats"

python3 - "$T/fio.json" "$T/stats.json" <<'EOF' || fail "counts"
import json, sys

job = json.load(open(sys.argv[1]))["jobs"][0]
stats = json.load(open(sys.argv[2]))
vbds = stats.get("vbds", stats) if isinstance(stats, dict) else stats
if isinstance(vbds, dict):
    vbds = [vbds]
vbd = [v for v in vbds if v.get("vdev") in ("xvda", 51712, "51712")][0]
rd, wr = job["read"]["total_ios"], job["write"]["total_ios"]
print("dedup: fio error=%d read ios=%d write ios=%d; blkbackd rd_req=%d wr_req=%d errors=%d" %
      (job["error"], rd, wr, vbd["rd_req"], vbd["wr_req"], vbd.get("errors", 0)))
assert job["error"] == 0, "fio reported an error"
assert wr > 0 and rd > wr / 4, "fio did too little I/O to mean anything"
assert vbd.get("errors", 0) == 0, "backend counted errors"
EOF

"$BIN/blkctl" --pool "$POOL" pool --json >"$T/pool.json" || fail "pool --json"
python3 - "$T/pool.json" <<'EOF' || fail "pool stats"
import json, sys
p = json.load(open(sys.argv[1]))
print("dedup pool: logical %d stored %d unique %d ratio %.2f" %
      (p["logical_bytes"], p["stored_bytes"], p["unique_blocks"], p["dedup_ratio"]))
assert p["unique_blocks"] > 0 and p["stored_bytes"] == p["unique_blocks"] * 4096
assert p["logical_bytes"] >= p["stored_bytes"]
EOF
"$BIN/blkctl" --pool "$POOL" fsck >"$T/fsck.out" || fail "fsck: $(cat "$T/fsck.out")"
"$BIN/blkctl" --pool "$POOL" detach g1 xvda || fail "detach"
kill "$BBPID"
wait "$BBPID" || fail "blkbackd exited badly"
BBPID=""
# Offline, blkctl opens the store itself: it must be clean after the daemon's close too.
"$BIN/blkctl" --pool "$POOL" fsck >"$T/fsck2.out" || fail "offline fsck: $(cat "$T/fsck2.out")"
echo "dedup_fio: ok"
