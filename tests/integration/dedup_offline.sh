#!/bin/sh
# dedup_offline.sh - blkctl on dedup volumes without blkbackd: it opens the pool's dedup store
# itself (under the daemon's lock). create, import with progress lines (not a terminal),
# snapshot, clone, export round trip, resize, gc, fsck, pool/list --json, delete back to an
# empty store.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-dedup-offline.XXXXXX)
POOL="$T/pool"
trap 'rm -rf "$T"' EXIT INT TERM

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
	exit 1
}
ctl() { "$BIN/blkctl" --pool "$POOL" "$@"; }

python3 - "$T/in.img" <<'EOF'
import os, sys
data = os.urandom(6 << 20) + bytes(2 << 20) + os.urandom(4096) * 512
open(sys.argv[1], "wb").write(data)
EOF
ctl create a --size 12M --store dedup >"$T/create.log" || fail "create"
if ctl create bad --size 6K --store dedup 2>/dev/null; then fail "size not a multiple of 4096"; fi
ctl import a "$T/in.img" >"$T/import.out" 2>"$T/import.log" || fail "import"
grep -q '^import: 100%$' "$T/import.log" || fail "import printed no progress lines"
ctl snapshot a s >/dev/null || fail "snapshot"
ctl clone s c >/dev/null || fail "clone"
ctl export c "$T/c.img" >/dev/null 2>"$T/export.log" || fail "export"
cmp -n "$(stat -c %s "$T/in.img")" "$T/in.img" "$T/c.img" || fail "export of the clone differs"
ctl resize c 16M >"$T/resize.log" || fail "offline resize"
grep -q offline "$T/resize.log" || fail "resize did not run offline"
[ "$(ctl list --json | python3 -c 'import json,sys; print([v["size"] for v in json.load(sys.stdin) if v["name"] == "c"][0])')" -eq $((16 << 20)) ] ||
	fail "resized size not recorded"
if ctl resize s 16M 2>/dev/null; then fail "a snapshot was resized"; fi
ctl pool --json >"$T/pool.json" || fail "pool --json"
python3 - "$T/pool.json" <<'EOF' || fail "pool numbers"
import json, sys
p = json.load(open(sys.argv[1]))
# a, s and c each map 1536 random + 512 copies of one block; 1537 unique blocks in all.
assert p["unique_blocks"] == 1537, p
assert p["logical_bytes"] == 3 * 2048 * 4096, p
assert abs(p["dedup_ratio"] - 3 * 2048 / 1537) < 1e-6, p
print("offline pool: ratio %.3f" % p["dedup_ratio"])
EOF
ctl fsck >"$T/fsck.log" || fail "fsck"
ctl delete a >/dev/null && ctl delete s >/dev/null && ctl delete c >/dev/null || fail "delete"
ctl gc >/dev/null 2>"$T/gc.log" || fail "gc"
grep -q '^gc: ' "$T/gc.log" || fail "gc printed no progress lines"
ctl pool --json | python3 -c '
import json, sys
p = json.load(sys.stdin)
assert p["unique_blocks"] == 0 and p["logical_bytes"] == 0 and p["containers"] == 0, p' ||
	fail "store not empty after deleting everything"
ctl fsck >"$T/fsck2.log" || fail "fsck after delete"
echo "dedup_offline: ok"
