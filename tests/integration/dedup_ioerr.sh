#!/bin/sh
# dedup_ioerr.sh - container I/O errors through the dedup target's io_uring: a container file cut
# short under a running blkbackd (its blocks at and past the cut now read short or at EOF) makes
# the guest's reads of those blocks fail with EIO, one block that straddles the cut included
# (a short transfer the target finishes itself); blocks before the cut still verify;
# blkbackd stays up, counts the errors, and the same queue then serves a full write + verify
# pass at QD32 (no io_uring entry or request slot was lost on the error paths).
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
LIB=${SLUICE_LIB:?run through tests/run.sh}
TOP=${SLUICE_TOP:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-dedup-ioerr.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""

. "$TOP/tests/integration/lib/fio.sh"

fio_job() { # fio_job NAME ARGS...: one fio run on g1/xvda, JSON in $T/NAME.json
	name=$1
	shift
	engine_fio --hv_dir="$HV" --domain=g1 --filename=xvda --name="$name" \
		--output-format=json --output="$T/$name.json" "$@" 2>"$T/$name.err"
}

fio_error() { # fio_error NAME: the error fio's JSON reports for the job (0 = none)
	python3 -c 'import json, sys
t = open(sys.argv[1]).read()
print(json.loads(t[t.find("{"):])["jobs"][0]["error"])' "$T/$1.json"
}

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 256M >/dev/null || fail "domain create"
start_blkbackd
"$BIN/blkctl" --pool "$POOL" create dvol --size 64M --store dedup >/dev/null || fail "create"
"$BIN/blkctl" --pool "$POOL" attach dvol g1 xvda || fail "attach"

# 8 MiB of unique data (fio's verify blocks carry their offset), written one 64 KiB request at
# a time: a fresh store appends them to its first container in order, so volume block b is
# slot b of that container.
fio_job fill --rw=write --bs=64k --iodepth=1 --size=8M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 || fail "fill"
set -- "$POOL"/dedup/containers/*.ctr
[ $# -eq 1 ] && [ -f "$1" ] || fail "expected one container file, found: $*"
CTR=$1

# Cut the container 2 KiB into slot 1024 (offset 4 MiB): blocks 0-1023 are whole, block 1024
# reads short, the rest are past the end of the file.
truncate -s $((4194304 + 2048)) "$CTR"

# Before the cut: 64 KiB reads (16-block extents) at QD16 verify.
VERIFY="--rw=write --bs=64k --size=4M --verify=crc32c --verify_only=1 --verify_fatal=1"
# shellcheck disable=SC2086
fio_job before $VERIFY --iodepth=16 || fail "reads before the cut did not verify"
[ "$(fio_error before)" = 0 ] || fail "reads before the cut: fio error $(fio_error before)"

# The straddling block alone (a 4 KiB read that comes back 2 KiB short), then everything past
# the cut in 64 KiB reads: every one must fail with EIO, none may hang or kill the daemon.
if fio_job straddle --rw=read --bs=4k --offset=4M --size=4k --iodepth=1; then
	fail "a read of the block the cut splits succeeded"
fi
[ "$(fio_error straddle)" = 5 ] || fail "straddling read: fio error $(fio_error straddle), not EIO"
if fio_job past --rw=read --bs=64k --offset=4M --size=4M --iodepth=16; then
	fail "reads past the cut succeeded"
fi
[ "$(fio_error past)" = 5 ] || fail "reads past the cut: fio error $(fio_error past), not EIO"
kill -0 "$BBPID" 2>/dev/null || fail "blkbackd died on container read errors"
"$BIN/blkctl" --pool "$POOL" stats g1 xvda --json >"$T/stats.json" || fail "stats"
python3 - "$T/stats.json" <<'EOF' || fail "error counts"
import json, sys
stats = json.load(open(sys.argv[1]))
vbds = stats.get("vbds", stats) if isinstance(stats, dict) else stats
if isinstance(vbds, dict):
    vbds = [vbds]
vbd = [v for v in vbds if v.get("vdev") in ("xvda", 51712, "51712")][0]
print("dedup_ioerr: blkbackd counted %d errors" % vbd.get("errors", 0))
assert vbd.get("errors", 0) >= 2, "the failed reads were not counted as errors"
EOF

# The queue is whole: new unique data (appended past the cut, which extends the file) written
# and verified at QD32 through the same ring, and the first 4 MiB still read back.
fio_job after --rw=randwrite --bs=4k --iodepth=32 --offset=16M --size=8M --verify=crc32c \
	--do_verify=1 --verify_fatal=1 || fail "write + verify after the errors"
[ "$(fio_error after)" = 0 ] || fail "write + verify after the errors: fio error $(fio_error after)"
# shellcheck disable=SC2086
fio_job again $VERIFY --iodepth=16 || fail "reads before the cut did not verify again"
"$BIN/blkctl" --pool "$POOL" detach g1 xvda || fail "detach"
kill "$BBPID"
wait "$BBPID" || fail "blkbackd exited badly"
BBPID=""
echo "dedup_ioerr: ok"
