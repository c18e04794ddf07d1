# common.sh - sourced by integration tests after they made their scratch directory $T: stop
# whatever the test started however it ends, and fail with the logs that explain why.
#
# Processes: a test keeps the PIDs of what it starts in the variables below (and empties a
# variable once it stopped that process itself); on exit they are stopped in this order -
# guests first, then the backend, then the hypervisor - and $T is removed:
#   FIOPIDS (a list), FIOPID, WPID (guests and workers), BBPID (blkbackd), HVPID (hvsimd).
# fail MESSAGE: print "FAIL: MESSAGE" and the end of every log in $T (*.log, *.err, *.out, and
# the files out and err), then exit 1.
# wait_sock PATH: wait (at most 10 s) for a daemon's socket to appear.
# start_hvsimd: hvsimd in $HV (log $T/hvsimd.log) as HVPID, once both its sockets exist.
# start_blkbackd [ARGS...]: blkbackd on $HV and $POOL with ARGS (log $T/blkbackd.log) as
# BBPID, once its control socket exists.
# vbd_stat DOMAIN VDEV FIELD: one counter of `blkctl stats` for that disk on $POOL (0 when
# blkbackd does not know the disk yet).

FIOPIDS=${FIOPIDS:-}
FIOPID=${FIOPID:-}
WPID=${WPID:-}
BBPID=${BBPID:-}
HVPID=${HVPID:-}

it_stop() { # it_stop PID...: kill and reap
	for p in "$@"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	return 0
}

cleanup() {
	set +e # a process that died of its signal makes wait fail: stop the rest all the same
	# shellcheck disable=SC2086 # a list of PIDs
	it_stop $FIOPIDS
	it_stop "$FIOPID" "$WPID" "$BBPID" "$HVPID"
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/*.log "$T"/*.err "$T"/*.out "$T"/out "$T"/err; do
		[ -f "$f" ] && { echo "--- $f" >&2; tail -30 "$f" >&2; }
	done
	exit 1
}

wait_sock() {
	_i=0
	while [ ! -S "$1" ]; do
		_i=$((_i + 1))
		[ $_i -gt 200 ] && fail "$1 did not appear"
		sleep 0.05
	done
	return 0
}

start_hvsimd() {
	"$SLUICE_BIN/hvsimd" --dir "$HV" 2>>"$T/hvsimd.log" &
	HVPID=$!
	wait_sock "$HV/xenstore.sock"
	wait_sock "$HV/hv.sock"
}

start_blkbackd() {
	"$SLUICE_BIN/blkbackd" --hv-dir "$HV" --pool "$POOL" "$@" 2>>"$T/blkbackd.log" &
	BBPID=$!
	wait_sock "$POOL/blkbackd.sock"
}

vbd_stat() {
	"$SLUICE_BIN/blkctl" --pool "$POOL" stats "$1" "$2" --json 2>/dev/null | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
    v = v.get("vbds", v) if isinstance(v, dict) else v
    v = v if isinstance(v, list) else [v]
    print(int(v[0][sys.argv[1]]))
except Exception:
    print(0)' "$3"
}
