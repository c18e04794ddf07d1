#!/bin/sh
# dedup_snap.sh - dedup volumes through blkbackd: a guest writes, a snapshot keeps what was
# acknowledged, the guest overwrites, a clone of the snapshot reads the old data through a
# guest, writes to the clone never show in the snapshot or the origin; import/export round
# trip (cmp); after deleting everything and a gc, the store holds nothing (pool --json) and
# fsck is clean.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-dedup-snap.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
. "$SLUICE_TOP/tests/integration/lib/fio.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""

ctl() { "$BIN/blkctl" --pool "$POOL" "$@"; }

# guest_fio VDEV NAME ARGS...: fio in domain g1 on VDEV through the blkfront engine.
guest_fio() {
	vdev=$1
	name=$2
	shift 2
	env LD_PRELOAD="$FIO_PRELOAD" ASAN_OPTIONS="$FIO_ASAN" \
		fio --ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=g1 \
		--filename="$vdev" --name="$name" --bs=64k --iodepth=8 --size=8M \
		--output="$T/fio-$name.out" "$@" 2>"$T/fio-$name.err"
}

# write_pat VDEV PATTERN / check_pat VDEV PATTERN: the first 8 MiB hold PATTERN in every byte.
write_pat() { guest_fio "$1" "w-$1-$2" --rw=write --verify=pattern --verify_pattern="$2" \
	--do_verify=0; }
check_pat() { guest_fio "$1" "r-$1-$2" --rw=write --verify=pattern --verify_pattern="$2" \
	--verify_only=1 --verify_fatal=1; }

# file_pat FILE PATTERN: the file's first 8 MiB are all PATTERN (an exported image).
file_pat() {
	python3 - "$1" "$2" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read(8 << 20)
want = bytes([int(sys.argv[2], 16)]) * (8 << 20)
sys.exit(0 if data == want else 1)
EOF
}

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 256M >/dev/null || fail "domain create"
start_blkbackd

ctl create base --size 32M --store dedup >/dev/null || fail "create"
ctl attach base g1 xvda >/dev/null || fail "attach base"
write_pat xvda 0x11 || fail "guest write 0x11"
ctl snapshot base snap1 >/dev/null || fail "snapshot"
write_pat xvda 0x22 || fail "guest overwrite 0x22"
check_pat xvda 0x22 || fail "base reads its overwrite"
ctl clone snap1 clone1 >/dev/null || fail "clone"
ctl attach clone1 g1 xvdb >/dev/null || fail "attach clone"
check_pat xvdb 0x11 || fail "the clone does not read the snapshot's data"
write_pat xvdb 0x33 || fail "guest write to the clone"
check_pat xvdb 0x33 || fail "the clone reads its own write"
check_pat xvda 0x22 || fail "a write to the clone shows in the origin"

# The snapshot is read-only and still holds what was acknowledged before it.
ctl attach snap1 g1 xvdc --ro >/dev/null || fail "attach snapshot"
check_pat xvdc 0x11 || fail "the snapshot changed"
# The checker itself must reject other data, or the checks above would prove nothing.
if check_pat xvdc 0x22; then fail "fio verify_only accepted the wrong pattern"; fi
ctl export snap1 "$T/snap1.img" >/dev/null || fail "export snapshot"
file_pat "$T/snap1.img" 11 || fail "exported snapshot is not all 0x11"
ctl export base "$T/base.img" >/dev/null || fail "export base"
file_pat "$T/base.img" 22 || fail "exported base is not all 0x22"
[ "$(stat -c %s "$T/base.img")" -eq $((32 << 20)) ] || fail "export size"

# Online resize of an attached dedup volume; a snapshot cannot be resized.
ctl resize base 48M >"$T/resize.log" || fail "online resize"
grep -q online "$T/resize.log" || fail "resize did not go through blkbackd"
check_pat xvda 0x22 || fail "base after the resize"
if ctl resize snap1 48M 2>/dev/null; then fail "a snapshot was resized"; fi

# Import/export round trip: random data, a run of zeros, duplicate blocks, a partial end.
python3 - "$T/in.img" <<'EOF'
import os, sys
blk = os.urandom(4096)
data = os.urandom(3 << 20) + bytes(1 << 20) + blk * 64 + os.urandom(1000)
open(sys.argv[1], "wb").write(data)
EOF
ctl create imp --size 8M --store dedup >/dev/null || fail "create imp"
ctl import imp "$T/in.img" >/dev/null || fail "import"
ctl export imp "$T/out.img" >/dev/null || fail "export imp"
n=$(stat -c %s "$T/in.img")
cmp -n "$n" "$T/in.img" "$T/out.img" || fail "import/export round trip differs"
python3 - "$T/out.img" "$n" <<'EOF' || fail "exported tail is not zeros"
import sys
d = open(sys.argv[1], "rb").read()
assert d[int(sys.argv[2]):] == bytes(len(d) - int(sys.argv[2]))
EOF

ctl list --json >"$T/list.json" || fail "list --json"
ctl pool --json >"$T/pool.json" || fail "pool --json"
python3 - "$T/list.json" "$T/pool.json" <<'EOF' || fail "shares"
import json, sys
vols = {v["name"]: v for v in json.load(open(sys.argv[1]))}
pool = json.load(open(sys.argv[2]))
assert vols["base"]["size"] == 48 << 20, vols["base"]
for n in ("base", "snap1", "clone1", "imp"):
    assert vols[n]["store"] == "dedup" and "share_bytes" in vols[n], n
assert vols["snap1"]["readonly"] and vols["clone1"]["origin"] == "snap1"
total = sum(v["share_bytes"] for v in vols.values() if v["store"] == "dedup")
print("pool: logical %d stored %d unique %d ratio %.3f; shares add up to %d" %
      (pool["logical_bytes"], pool["stored_bytes"], pool["unique_blocks"], pool["dedup_ratio"],
       total))
# 0x11, 0x22, 0x33 are one block each; imp holds 768 + 1 + 1 unique blocks.
assert pool["unique_blocks"] == 3 + 770, pool["unique_blocks"]
assert abs(total - pool["stored_bytes"]) <= 4096, (total, pool["stored_bytes"])
EOF

# Delete everything: refused while attached, then every reference goes back to zero.
if ctl delete base 2>/dev/null; then fail "deleting an attached volume was allowed"; fi
for v in xvda xvdb xvdc; do ctl detach g1 $v >/dev/null || fail "detach $v"; done
for v in clone1 base snap1 imp; do ctl delete $v >/dev/null || fail "delete $v"; done
ctl gc >/dev/null || fail "gc"
ctl pool --json >"$T/pool2.json" || fail "pool --json after delete"
python3 - "$T/pool2.json" <<'EOF' || fail "store not empty after deleting everything"
import json, sys
p = json.load(open(sys.argv[1]))
print("after delete: %s" % p)
assert p["unique_blocks"] == 0 and p["logical_bytes"] == 0 and p["stored_bytes"] == 0
assert p["volumes"] == 0 and p["snapshots"] == 0 and p["reclaim_pending"] == 0
EOF
ctl fsck >"$T/fsck.log" || fail "fsck after delete"
kill "$BBPID"
wait "$BBPID" || fail "blkbackd exited badly"
BBPID=""
echo "dedup_snap: ok"
