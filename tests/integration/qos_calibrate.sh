#!/bin/sh
# qos_calibrate.sh - `blkctl calibrate VOL` on a real file system: the six probes give positive,
# consistent times; the model it prints is the one saved in POOL/qos/device.json (the fields
# qos_model_load reads, with the probes behind it); the scratch file is gone and the volume's
# data is unchanged, also after a SIGTERM mid-probe (which leaves the saved model alone); and
# every mistake is one "blkctl: " line (exit 2 for the command line, 1 for the rest): no such
# volume, bad --seconds and --size, a scratch area larger than the free space, tmpfs without
# --buffered. No daemon runs: calibrate works on the pool alone. Takes about 10 s.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
# Not /tmp: it may be tmpfs, which has no device and no O_DIRECT to measure one with.
T=$(mktemp -d /var/tmp/sluice-qos-cal.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
P="$T/pool"
WPID=""

# bad STATUS PATTERN ARGS...: blkctl exits STATUS with exactly one stderr line that starts
# "blkctl: " and contains PATTERN (grep -E), and prints nothing on stdout.
bad() {
	want=$1
	pat=$2
	shift 2
	rc=0
	"$BIN/blkctl" "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" -eq "$want" ] || fail "blkctl $*: exit $rc, expected $want"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "blkctl $*: not exactly one line on stderr"
	grep -q '^blkctl: ' "$T/err" || fail "blkctl $*: the line does not start with 'blkctl: '"
	grep -Eq -- "$pat" "$T/err" || fail "blkctl $*: '$(cat "$T/err")' does not say '$pat'"
	[ -s "$T/out" ] && fail "blkctl $*: printed on stdout while failing"
	return 0
}

# The pool's files other than the model: a scratch file left behind would show up here.
pool_files() {
	(cd "$P" && find . -path ./qos -prune -o -type f -print | sort)
}

# This test is about O_DIRECT on a real device; say so plainly when the host has none here.
if [ "$(stat -f -c %T "$T")" = tmpfs ] ||
	! dd if=/dev/zero of="$T/direct" bs=4096 count=1 oflag=direct 2>/dev/null; then
	fail "/var/tmp does not support O_DIRECT on this host; calibrate cannot be tested here"
fi
rm -f "$T/direct"

"$BIN/blkctl" --pool "$P" create vol1 --size 8M >/dev/null || fail "create vol1"
# A pattern the probes must not disturb.
dd if=/dev/urandom of="$P/vols/vol1.img" bs=1M count=8 conv=notrunc,fsync 2>/dev/null
sum_before=$(sha256sum <"$P/vols/vol1.img")
files_before=$(pool_files)

# --- Usage errors (exit 2) and refusals (exit 1), before any probe runs ---
bad 2 'needs a volume' --pool "$P" calibrate
bad 2 'one volume' --pool "$P" calibrate vol1 vol2
bad 2 'unknown option' --pool "$P" calibrate vol1 --fast
bad 2 'seconds must be a whole number from 1 to 60' --pool "$P" calibrate vol1 --seconds 0
bad 2 'seconds must be a whole number from 1 to 60' --pool "$P" calibrate vol1 --seconds 61
bad 2 'seconds must be a whole number from 1 to 60' --pool "$P" calibrate vol1 --seconds x
bad 2 'needs a value' --pool "$P" calibrate vol1 --seconds
bad 2 'bad --size' --pool "$P" calibrate vol1 --size 12Q
bad 2 'size must be at least 32M' --pool "$P" calibrate vol1 --size 16M
bad 1 "no volume named 'nope'" --pool "$P" calibrate nope
bad 1 'not a valid volume name' --pool "$P" calibrate ../vols/vol1
bad 1 'no room for the scratch file .* needs 1000T free' --pool "$P" calibrate vol1 --size 1000T
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
	S=$(mktemp -d /dev/shm/sluice-qos-cal.XXXXXX)
	"$BIN/blkctl" --pool "$S" create v --size 1M >/dev/null
	rc=0
	"$BIN/blkctl" --pool "$S" calibrate v --size 32M >"$T/out" 2>"$T/err" || rc=$?
	rm -rf "$S"
	[ "$rc" -eq 1 ] && grep -q '^blkctl: .*tmpfs.*--buffered' "$T/err" ||
		fail "calibrate on tmpfs without --buffered was not refused (exit $rc)"
fi
[ -e "$P/qos/device.json" ] && fail "a refused calibrate saved a model"
[ "$(pool_files)" = "$files_before" ] || fail "a refused calibrate left files in the pool"

# --- A real calibration ---
"$BIN/blkctl" --pool "$P" calibrate vol1 --seconds 1 --size 64M --json >"$T/out" 2>"$T/err" ||
	fail "calibrate failed (exit $?)"
[ "$(grep -c 'ns/request' "$T/err")" -eq 6 ] || fail "not one progress line per probe"
grep -q 'O_DIRECT' "$T/err" || fail "progress does not say it measures with O_DIRECT"
grep -q 'blkbackd uses the new model from its next start' "$T/err" ||
	fail "calibrate does not say when blkbackd picks the model up"
cp "$T/out" "$T/cal.json"

python3 - "$T/cal.json" "$P/qos/device.json" "$P" <<'EOF' || fail "calibrate's results"
import json, sys

out = json.load(open(sys.argv[1]))
saved = json.load(open(sys.argv[2]))
pool = sys.argv[3]
bad = []

def check(cond, what):
    if not cond:
        bad.append(what)

pr, m, cap = out["probes"], out["model"], out["capacity"]
check(out["vol"] == "vol1" and out["direct"] is True, "vol/direct")
check(out["seconds"] == 1 and out["size"] == 64 << 20 and out["qd"] == 32, "settings")
check(out["path"] == pool + "/qos/device.json", "path " + out["path"])
check(pr["big_bytes"] == 1 << 20, "big_bytes")
for k in ("rd_rand_ns", "rd_seq_ns", "rd_big_ns", "wr_rand_ns", "wr_seq_ns", "wr_big_ns"):
    check(isinstance(pr[k], int) and 0 < pr[k] <= 10**9, "probe %s = %r" % (k, pr[k]))
for d in ("rd", "wr"):
    # 256 times the data per request takes longer on any device.
    check(pr[d + "_big_ns"] > pr[d + "_seq_ns"], d + ": 1M not slower than 4K")
    page, seq_b, rand_b = m[d + "_page_ns"], m[d + "_seq_base_ns"], m[d + "_rand_base_ns"]
    for k in (page, seq_b, rand_b):
        check(isinstance(k, int) and 0 <= k <= 10**9, d + ": coefficient out of range")
    # The model is solved exactly at the probes (qos_cost_model_from_calib).
    check(page == (pr[d + "_big_ns"] - pr[d + "_seq_ns"]) // 255, d + ": page_ns")
    check(page > 0, d + ": a page costs nothing")
    check(seq_b == max(pr[d + "_seq_ns"] - page, 0), d + ": seq_base_ns")
    check(rand_b == max(pr[d + "_rand_ns"] - page, 0), d + ": rand_base_ns")
    check(page + rand_b > 0, d + ": a 4K random request costs 0")
    iops = cap[d + "_rand_iops"]
    check(iops == 10**9 // (page + rand_b), d + ": rand_iops")
    check(cap[d + "_big_bps"] > 0, d + ": big_bps")
check(0 < cap["capacity_iops"] <= max(cap["rd_rand_iops"], cap["wr_rand_iops"]), "capacity")

# What blkbackd loads (qos_model_load): the six integer fields, and they are the printed model.
for k, v in m.items():
    check(saved.get(k) == v, "device.json " + k)
check(saved.get("source") == "calibrate vol1", "source")
check(isinstance(saved.get("saved"), int) and saved["saved"] > 0, "saved time")
check(saved.get("calib") == pr, "device.json calib")
if bad:
    print("wrong: " + "; ".join(bad))
    sys.exit(1)
EOF

[ "$(pool_files)" = "$files_before" ] || fail "calibrate left files in the pool: $(pool_files)"
[ "$(ls -A "$P/qos")" = device.json ] || fail "POOL/qos holds more than device.json"
[ "$(sha256sum <"$P/vols/vol1.img")" = "$sum_before" ] || fail "calibrate changed the volume"

# --- SIGTERM mid-probe: nothing left behind, the saved model unchanged ---
cp "$P/qos/device.json" "$T/model.before"
# The background shell truncates err only once it runs: the grep below must not see the last run's.
rm -f "$T/out" "$T/err"
"$BIN/blkctl" --pool "$P" calibrate vol1 --seconds 30 --size 64M >"$T/out" 2>"$T/err" &
WPID=$!
i=0
until grep -q filled "$T/err" 2>/dev/null; do
	i=$((i + 1))
	[ "$i" -lt 200 ] || fail "calibrate did not start its probes within 20 s"
	kill -0 "$WPID" 2>/dev/null || fail "calibrate exited before its probes"
	sleep 0.1
done
kill -TERM "$WPID"
rc=0
wait "$WPID" || rc=$?
WPID=""
[ "$rc" -eq 1 ] || fail "calibrate after SIGTERM: exit $rc, expected 1"
grep -q '^blkctl: calibration interrupted' "$T/err" || fail "SIGTERM: no 'interrupted' line"
cmp -s "$P/qos/device.json" "$T/model.before" || fail "an interrupted calibrate changed the model"
[ "$(pool_files)" = "$files_before" ] || fail "an interrupted calibrate left files in the pool"
[ "$(sha256sum <"$P/vols/vol1.img")" = "$sum_before" ] || fail "calibrate changed the volume"

echo "qos_calibrate: ok"
