#!/bin/sh
# demo.sh - `make demo`: the main job end to end, narrated. Starts the hypervisor and the block
# backend in a temp dir, creates a guest and a 1 GiB disk, runs a 10-second fio verify job inside
# the guest, grows the disk while the guest runs, prints the statistics, and tears it all down.
set -eu

BUILD=${BUILD:-build}
BIN="$(cd "$BUILD/bin" && pwd)"
LIB="$(cd "$BUILD/lib" && pwd)"
T=$(mktemp -d /tmp/sluice-demo.XXXXXX)
HV="$T/hv"
POOL="$T/pool"
HVPID=""
BBPID=""
FIOPID=""

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# Print a daemon's command line; the caller starts it with & itself, so that $! is the daemon
# (a backgrounded `run` would make $! a subshell, and killing that would leave the daemon).
show_bg() { printf '$ %s &\n' "$*"; }

cleanup() {
	set +e # stop everything, whatever one kill or wait says
	[ -n "$FIOPID" ] && kill "$FIOPID" 2>/dev/null && wait "$FIOPID" 2>/dev/null
	[ -n "$BBPID" ] && kill "$BBPID" 2>/dev/null && wait "$BBPID" 2>/dev/null
	[ -n "$HVPID" ] && kill "$HVPID" 2>/dev/null && wait "$HVPID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

wait_for() { # wait_for FILE: until a daemon's socket exists (10 s at most)
	i=0
	while [ ! -S "$1" ]; do
		i=$((i + 1))
		[ $i -gt 100 ] && { echo "demo: $1 did not appear" >&2; exit 1; }
		sleep 0.1
	done
}

step "Start the hypervisor (hvsimd): xenstore, domains, grant tables, event channels"
show_bg "$BIN/hvsimd" --dir "$HV"
"$BIN/hvsimd" --dir "$HV" 2>"$T/hvsimd.log" &
HVPID=$!
wait_for "$HV/xenstore.sock"
echo "hvsimd running (pid $HVPID), xenstore at $HV/xenstore.sock"

step "Create a guest domain"
run "$BIN/hvctl" --dir "$HV" domain create guest1 --mem 512M
run "$BIN/hvctl" --dir "$HV" domain list

step "The real Xen xenstore tools talk to it (xenstore-utils from Debian)"
printf '$ XENSTORED_PATH=%s xenstore-ls /local/domain\n' "$HV/xenstore.sock"
XENSTORED_PATH="$HV/xenstore.sock" xenstore-ls /local/domain

step "Start the block backend (blkbackd) on a pool"
show_bg "$BIN/blkbackd" --hv-dir "$HV" --pool "$POOL"
"$BIN/blkbackd" --hv-dir "$HV" --pool "$POOL" 2>"$T/blkbackd.log" &
BBPID=$!
wait_for "$POOL/blkbackd.sock"

step "Create a 1 GiB disk and attach it to the guest as xvda"
run "$BIN/blkctl" --pool "$POOL" create vol1 --size 1G
run "$BIN/blkctl" --pool "$POOL" attach vol1 guest1 xvda
run "$BIN/blkctl" --pool "$POOL" list

step "Run fio inside the guest for 10 s (random read/write; every write read back and checked with crc32c as it goes) and grow the disk to 2 GiB while it runs"
printf '$ fio --ioengine=external:%s/fio-blkfront.so --hv_dir=%s --domain=guest1 --filename=xvda --rw=randrw --bs=4k --iodepth=32 --verify=crc32c --verify_backlog=4096 --runtime=10 --time_based ...\n' "$LIB" "$HV"
fio --ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=guest1 --filename=xvda \
	--rw=randrw --bs=4k --iodepth=32 --verify=crc32c --verify_backlog=4096 --size=256M --runtime=10 --time_based \
	--do_verify=1 --verify_fatal=1 --verify_state_save=0 --name=demo --output="$T/fio.txt" &
FIOPID=$!
sleep 4
run "$BIN/blkctl" --pool "$POOL" resize vol1 2G
wait "$FIOPID" || { cat "$T/fio.txt"; echo "demo: fio failed" >&2; exit 1; }
FIOPID=""
grep -E 'read:|write:|err=' "$T/fio.txt" | sed 's/^/  /'

step "The running guest saw the new size: fio writes and verifies past the old 1 GiB end"
fio --ioengine="external:$LIB/fio-blkfront.so" --hv_dir="$HV" --domain=guest1 --filename=xvda \
	--rw=write --bs=64k --iodepth=8 --offset=1536M --size=64M --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --verify_state_save=0 --name=past-old-end --output="$T/fio2.txt" ||
	{ cat "$T/fio2.txt"; exit 1; }
grep -E 'write:|err=' "$T/fio2.txt" | sed 's/^/  /'
grep -i 'capacity' "$T/blkbackd.log" | tail -2 | sed 's/^/  blkbackd: /' || true

step "Per-disk statistics"
run "$BIN/blkctl" --pool "$POOL" stats

step "Tear down"
run "$BIN/blkctl" --pool "$POOL" detach guest1 xvda
printf '$ kill %s   # blkbackd: Closing/Closed handshake, then exit\n' "$BBPID"
kill "$BBPID"
wait "$BBPID" 2>/dev/null || true
BBPID=""
run "$BIN/hvctl" --dir "$HV" domain destroy guest1
kill "$HVPID"
wait "$HVPID" 2>/dev/null || true
HVPID=""
echo
echo "demo: done (logs were in $T, now removed)"
