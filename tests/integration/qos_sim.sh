#!/bin/sh
# qos_sim.sh - per-disk QoS end to end on blkbackd's simulated device (--sim-device 3000:100):
# three guests run fio at once and the device's IOPS split by their weights 1:2:4; an IOPS cap
# set online holds; a weight-1 guest with a reservation gets it beside two weight-1000 guests;
# invalid settings are refused with one line and change nothing; settings survive a blkbackd
# restart and go away with a detach. Rates are read from blkbackd's own counters (blkctl qos
# --json) over a window in the middle of each run. Margins are wide (the scheduler's exact
# behaviour is unit-tested in virtual time by qos-unit): this checks the wiring, not the maths.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
. "$SLUICE_TOP/tests/integration/lib/fio.sh"
T=$(mktemp -d /tmp/sluice-qos-sim.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""
FIOPIDS=""
SIM=3000

ctl() { "$BIN/blkctl" --pool "$POOL" "$@"; }

# snap FILE: when blkbackd read its counters and every vbd's completed requests: "time ns",
# then "domain ops" per line. (The daemon's time, not ours: blkctl may be slow to start.)
snap() {
	ctl qos --json >"$T/qos.json" || fail "qos --json"
	python3 -c '
import json, sys
q = json.load(open(sys.argv[1]))
print("time", q["time_ns"])
for v in q["vbds"]:
    print(v["domain"], v["ops"], v["state"])' "$T/qos.json" >"$1"
}

# load SECONDS DOMAIN...: saturating 4 KiB random reads (QD16) from each guest, in background.
load() {
	secs=$1
	shift
	LOADED="$*"
	FIOPIDS=""
	for g in "$@"; do
		engine_fio --hv_dir="$HV" --domain="$g" --filename=xvda --name="$g" \
			--rw=randread --bs=4k --iodepth=16 --size=32M --time_based \
			--runtime="$secs" --output-format=json --output="$T/fio-$g.json" \
			2>"$T/fio-$g.err" &
		FIOPIDS="$FIOPIDS $!"
	done
}

# window START LEN OUT: counters at START s and START+LEN s into the load -> IOPS of each
# loaded domain.
window() {
	sleep "$1"
	snap "$T/a"
	sleep "$2"
	snap "$T/b"
	python3 -c '
import sys
a = {l.split()[0]: l.split()[1:] for l in open(sys.argv[1])}
b = {l.split()[0]: l.split()[1:] for l in open(sys.argv[2])}
secs = (int(b.pop("time")[0]) - int(a.pop("time")[0])) / 1e9
for d in sys.argv[3].split():
    # A rate means something only while the guest was connected at both ends of the window.
    assert a[d][1] != "disconnected" and b[d][1] != "disconnected", \
        "%s was not connected through the window (machine too slow?)" % d
    print(d, (int(b[d][0]) - int(a[d][0])) / secs)' "$T/a" "$T/b" "$LOADED" >"$3" ||
		fail "window"
}

finish_load() {
	for p in $FIOPIDS; do
		wait "$p" || fail "a fio guest failed"
	done
	FIOPIDS=""
}

start_hvsimd
start_blkbackd --sim-device "$SIM:100"
for g in g1 g2 g3; do
	"$BIN/hvctl" --dir "$HV" domain create "$g" --mem 256M >/dev/null || fail "domain $g"
	ctl create "v$g" --size 32M >/dev/null || fail "create v$g"
done
ctl attach vg1 g1 xvda --weight 100 >/dev/null || fail "attach g1"
ctl attach vg2 g2 xvda --weight 200 >/dev/null || fail "attach g2"
ctl attach vg3 g3 xvda --weight 400 >/dev/null || fail "attach g3"

# --- Invalid settings: refused with one line, exit 1, nothing changed.
refuse() { # refuse WHAT ARGS...
	what=$1
	shift
	if ctl "$@" >"$T/out" 2>"$T/refused"; then
		fail "$what was accepted"
	fi
	[ "$(wc -l <"$T/refused")" -eq 1 ] || fail "$what: not one line: $(cat "$T/refused")"
	echo "refused ($what): $(cat "$T/refused")"
}
refuse "weight 0" set g1 xvda --weight 0
refuse "weight 65536" set g1 xvda --weight 65536
refuse "reservation above the cap" set g1 xvda --cap-iops 100 --reserve-iops 200
refuse "reservations above the device" set g1 xvda --reserve-iops $((SIM * 2))
refuse "burst without a cap" set g1 xvda --burst-iops 900 --burst-seconds 2
refuse "bad number" set g1 xvda --weight lots
refuse "no such disk" set g1 xvdc --weight 5
refuse "attach with weight 0" attach vg1 g1 xvdb --weight 0
ctl qos --json >"$T/qos.json" || fail "qos --json"
python3 - "$T/qos.json" <<'EOF' || fail "settings after the refusals"
import json, sys
q = json.load(open(sys.argv[1]))
assert q["enabled"] and q["device"]["sim_device"] == "3000:100", q["device"]
v = {x["domain"]: x for x in q["vbds"]}
assert sorted(v) == ["g1", "g2", "g3"], "the refused attach left a disk: %s" % sorted(v)
assert v["g1"]["weight"] == 100 and v["g1"]["cap_iops"] == 0 and v["g1"]["reserve_iops"] == 0
EOF

# --- Weights 1:2:4, all saturating: shares follow the weights.
load 8 g1 g2 g3
window 2 3 "$T/w.txt"
finish_load
python3 - "$T/w.txt" <<'EOF' || fail "weighted shares"
import sys
r = {d: float(x) for d, x in (l.split() for l in open(sys.argv[1]))}
tot = sum(r.values())
share = {d: r[d] / tot for d in r}
print("weights 1:2:4: IOPS %s, total %.0f of 3000, shares %s" %
      ({d: round(r[d]) for d in sorted(r)}, tot,
       {d: round(share[d], 3) for d in sorted(r)}))
want = {"g1": 1 / 7, "g2": 2 / 7, "g3": 4 / 7}
for d in want:
    assert abs(share[d] - want[d]) <= 0.25 * want[d], "%s share %.3f, want %.3f" % (
        d, share[d], want[d])
assert r["g1"] < r["g2"] < r["g3"]
assert tot >= 0.6 * 3000, "the device was not kept busy: %.0f IOPS" % tot
EOF

# --- An IOPS cap, set online while the guest runs.
load 7 g3
sleep 1
ctl set g3 xvda --cap-iops 500 >/dev/null || fail "set cap"
window 1 2.5 "$T/c.txt"
finish_load
python3 - "$T/c.txt" <<'EOF' || fail "cap"
import sys
r = {d: float(x) for d, x in (l.split() for l in open(sys.argv[1]))}
print("cap 500 IOPS: g3 did %.0f IOPS" % r["g3"])
assert 0.8 * 500 <= r["g3"] <= 1.1 * 500, r["g3"]
EOF
ctl set g3 xvda --cap-iops 0 >/dev/null || fail "remove the cap"

# --- A reservation: weight 1 with 900 IOPS reserved beside two weight-1000 guests.
ctl set g1 xvda --weight 1 --reserve-iops 900 >/dev/null || fail "set reservation"
ctl set g2 xvda --weight 1000 >/dev/null || fail "set g2"
ctl set g3 xvda --weight 1000 >/dev/null || fail "set g3"
load 8 g1 g2 g3
window 1.5 3 "$T/r.txt"
finish_load
python3 - "$T/r.txt" <<'EOF' || fail "reservation"
import sys
r = {d: float(x) for d, x in (l.split() for l in open(sys.argv[1]))}
print("reservation 900 IOPS at weight 1 beside two weight-1000 guests: %s" %
      {d: round(r[d]) for d in sorted(r)})
assert r["g1"] >= 0.75 * 900, r
assert r["g2"] > r["g1"] / 3 and r["g3"] > r["g1"] / 3, r
EOF

# --- Settings survive a restart of blkbackd; a detach removes them.
[ -f "$POOL/qos/g1-xvda.json" ] || fail "g1's settings are not in $POOL/qos"
kill -TERM "$BBPID"
wait "$BBPID" || fail "blkbackd did not stop cleanly"
BBPID=""
start_blkbackd --sim-device "$SIM:100"
i=0
until ctl qos --json >"$T/qos.json" 2>/dev/null &&
	[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["vbds"]))' \
		"$T/qos.json")" -eq 3 ]; do
	i=$((i + 1))
	[ $i -gt 100 ] && fail "the restarted blkbackd did not pick up the three disks"
	sleep 0.1
done
python3 - "$T/qos.json" <<'EOF' || fail "settings after a restart"
import json, sys
v = {x["domain"]: x for x in json.load(open(sys.argv[1]))["vbds"]}
print("after restart: g1 weight %d reserve %d; g3 weight %d" % (
    v["g1"]["weight"], v["g1"]["reserve_iops"], v["g3"]["weight"]))
assert v["g1"]["weight"] == 1 and v["g1"]["reserve_iops"] == 900
assert v["g2"]["weight"] == 1000 and v["g3"]["weight"] == 1000 and v["g3"]["cap_iops"] == 0
EOF
# The guest reconnects to the restarted daemon and is scheduled with its saved settings.
load 2 g1
finish_load
ctl qos --json >"$T/qos.json" || fail "qos --json"
python3 - "$T/qos.json" <<'EOF' || fail "reconnected guest"
import json, sys
v = {x["domain"]: x for x in json.load(open(sys.argv[1]))["vbds"]}
# (fio has disconnected again; the counters are kept across connections)
assert v["g1"]["ops"] > 0, v["g1"]
assert v["g1"]["reserve_iops"] == 900
EOF
ctl detach g1 xvda >/dev/null || fail "detach"
[ ! -e "$POOL/qos/g1-xvda.json" ] || fail "detach left g1's settings behind"
echo "qos_sim: ok"
