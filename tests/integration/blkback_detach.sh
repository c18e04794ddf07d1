#!/bin/sh
# blkback_detach.sh - detach during I/O completes cleanly: a guest writes (iodepth 32) and logs
# every acknowledged write; the control socket's detach answers ok once the frontend closed,
# the guest sees its disk go away, the nodes are gone, and every acknowledged write is on disk.
# Then reattach works, and blkbackd's counters match what the new writer did.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
GUEST="$BIN/../tests/bb-guest"
T=$(mktemp -d /tmp/sluice-bb-detach.XXXXXX)
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

ctl '{"cmd":"attach","vol":"vol1","domain":"g1","vdev":"xvdb"}' || fail "attach"
"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvdb --log "$T/acked" --depth 32 \
	>"$T/writer.out" 2>&1 &
WPID=$!
wait_lines "$T/acked" 300

ctl '{"cmd":"detach","domain":"g1","vdev":"xvdb"}' || fail "detach during I/O"
# The writer notices its disk is gone (exit 3), bounded by its own 200 ms waits.
rc=0
wait "$WPID" || rc=$?
WPID=""
cat "$T/writer.out"
[ "$rc" -eq 3 ] || fail "the writer did not see the disk go away (exit $rc)"
if XENSTORED_PATH="$HV/xenstore.sock" xenstore-exists /local/domain/0/backend/vbd/1/51728 \
	2>/dev/null; then
	fail "the backend directory is still there"
fi
"$GUEST" check --image "$POOL/vols/vol1.img" --log "$T/acked" --min 300 ||
	fail "an acknowledged write was lost by the detach"
ctl '{"cmd":"attached","vol":"vol1"}' || fail "attached"
grep -q '"vbds":\[\]' "$T/ctl.out" || fail "vol1 still listed as attached"

# Reattach: the disk works again, and the counters match the new writer exactly.
ctl '{"cmd":"attach","vol":"vol1","domain":"g1","vdev":"xvdb"}' || fail "reattach"
"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvdb --log "$T/acked2" --count 250 \
	--depth 8 >"$T/writer2.out" 2>&1 || fail "writing after the reattach"
"$GUEST" check --image "$POOL/vols/vol1.img" --log "$T/acked2" --min 250 ||
	fail "writes after the reattach are not on disk"
"$GUEST" ctl --pool "$POOL" '{"cmd":"stats","domain":"g1","vdev":"xvdb"}' >"$T/stats.out" ||
	fail "stats"
python3 - "$T/stats.out" <<'EOF' || fail "stats do not match the writer"
import json, sys
v = json.load(open(sys.argv[1]))["vbds"][0]
print("after reattach: wr_req=%d wr_sect=%d errors=%d inflight=%d" %
      (v["wr_req"], v["wr_sect"], v["errors"], v["inflight"]))
assert v["wr_req"] == 250 and v["wr_sect"] == 250 * 8, v
assert v["errors"] == 0 and v["inflight"] == 0, v
EOF

kill -TERM "$BBPID"
wait "$BBPID" || { BBPID=""; fail "blkbackd did not exit 0"; }
BBPID=""
echo "blkback_detach: ok"
