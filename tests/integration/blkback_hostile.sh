#!/bin/sh
# blkback_hostile.sh - a hostile guest sends garbage requests (random opcodes, nr_segments 0, 12
# and 200, last_sect 9, first_sect > last_sect, ungranted refs, refs outside the table, sectors
# past the end, a read into a read-only grant) and finally claims more requests than its ring
# holds, while a second guest runs a fio verify job through the engine. The hostile requests
# all get errors and the overflow disconnects that vbd; the other guest's data verifies; blkbackd
# keeps running, counts the errors, answers its control socket, and exits 0 on SIGTERM.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
GUEST="$BIN/../tests/bb-guest"
. "${SLUICE_TOP:-.}/tests/integration/lib/fio.sh"
T=$(mktemp -d /tmp/sluice-bb-hostile.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""
FIOPID=""

ctl() { "$GUEST" ctl --pool "$POOL" "$1" >>"$T/ctl.out"; }

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create good --mem 256M >/dev/null || fail "domain create good"
"$BIN/hvctl" --dir "$HV" domain create evil --mem 64M >/dev/null || fail "domain create evil"
"$GUEST" create --pool "$POOL" --vol vgood --size 67108864 || fail "create vgood"
"$GUEST" create --pool "$POOL" --vol vevil --size 16777216 || fail "create vevil"

start_blkbackd
ctl '{"cmd":"attach","vol":"vgood","domain":"good","vdev":"xvda"}' || fail "attach good"
ctl '{"cmd":"attach","vol":"vevil","domain":"evil","vdev":"xvda"}' || fail "attach evil"

engine_fio --hv_dir="$HV" --domain=good \
	--filename=xvda --name=good --rw=randrw --bs=4k --iodepth=16 --size=32M \
	--verify=crc32c --do_verify=1 --verify_fatal=1 --output="$T/fio.out" 2>"$T/fio.log" &
FIOPID=$!

"$GUEST" hostile --hv-dir "$HV" --domain evil --vdev xvda >"$T/hostile.out" 2>&1 ||
	fail "the hostile guest saw blkbackd misbehave"
cat "$T/hostile.out"

wait "$FIOPID" || { FIOPID=""; fail "the good guest's fio verify failed"; }
FIOPID=""
grep -q "err= 0" "$T/fio.out" || fail "fio reported errors"

kill -0 "$BBPID" 2>/dev/null || fail "blkbackd died"
ctl '{"cmd":"ping"}' || fail "blkbackd stopped answering"
"$GUEST" ctl --pool "$POOL" '{"cmd":"stats","domain":"evil","vdev":"xvda"}' >"$T/stats.out" ||
	fail "stats"
nbad=$(sed -n 's/^hostile: \([0-9]*\) bad requests.*/\1/p' "$T/hostile.out")
python3 - "$T/stats.out" "$nbad" <<'EOF' || fail "hostile requests were not counted as errors"
import json, sys
v = json.load(open(sys.argv[1]))["vbds"][0]
print("evil vbd: errors=%d rd_req=%d wr_req=%d state=%s" %
      (v["errors"], v["rd_req"], v["wr_req"], v["state"]))
# Every bad request the guest sent, and nothing else, was answered with an error.
assert v["errors"] == int(sys.argv[2]) and v["errors"] >= 79, v
assert v["inflight"] == 0, v
EOF
grep -q "halting the ring" "$T/blkbackd.log" || fail "no log line for the ring overflow"
grep -q "bad request id" "$T/blkbackd.log" || fail "no log line for bad requests"

kill -TERM "$BBPID"
wait "$BBPID" || { BBPID=""; fail "blkbackd did not exit 0 on SIGTERM"; }
BBPID=""
echo "blkback_hostile: ok"
