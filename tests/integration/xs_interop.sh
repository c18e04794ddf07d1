#!/bin/sh
# xs_interop.sh - the real xenstore-* tools (xenstore-utils) against a running hvsimd: dom0's
# socket, guests' sockets with Xen permissions and relative paths, watches including
# @releaseDomain on domain destroy, and clean shutdown removing the sockets.
# The tools need only XENSTORED_PATH=<socket> in their environment.
set -eu
BIN=${SLUICE_BIN:-build/bin}
T=$(mktemp -d)
HV=
WATCH=
cleanup() {
	[ -n "$WATCH" ] && kill "$WATCH" 2>/dev/null || true
	[ -n "$HV" ] && kill "$HV" 2>/dev/null && wait "$HV" 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

fail() {
	echo "FAIL: $*" >&2
	[ -f "$T/hvsimd.log" ] && cat "$T/hvsimd.log" >&2
	exit 1
}

# Poll for a condition (a shell command) for up to 10 s.
wait_for() {
	i=0
	while ! eval "$1"; do
		i=$((i + 1))
		[ $i -gt 100 ] && fail "timed out waiting for: $1"
		sleep 0.1
	done
}

"$BIN/hvsimd" --dir "$T" 2>"$T/hvsimd.log" &
HV=$!
wait_for "[ -S '$T/xenstore.sock' ]"

D0="$T/xenstore.sock"
xs() { XENSTORED_PATH="$D0" "$@"; }

# dom0: write, read, list, ls, exists, chmod, rm.
xs xenstore-write /test/a 1 /test/b "two words" || fail "write"
[ "$(xs xenstore-read /test/a)" = 1 ] || fail "read"
[ "$(xs xenstore-read /test/b)" = "two words" ] || fail "read spaces"
[ "$(xs xenstore-list /test | tr '\n' ' ')" = "a b " ] || fail "list"
xs xenstore-ls /test | grep -q '^b = "two words"$' || fail "ls"
xs xenstore-exists /test/a || fail "exists"
if xs xenstore-exists /test/nope; then fail "exists on a missing node"; fi
if xs xenstore-read /test/nope 2>/dev/null; then fail "read of a missing node"; fi
xs xenstore-rm /test/a || fail "rm"
if xs xenstore-exists /test/a; then fail "rm left the node"; fi

# Two guests, each with its own socket.
id1=$("$BIN/hvctl" --dir "$T" domain create xsg1) || fail "create xsg1"
id2=$("$BIN/hvctl" --dir "$T" domain create xsg2) || fail "create xsg2"
G1="$T/domains/$id1/xenstore.sock"
G2="$T/domains/$id2/xenstore.sock"
[ -S "$G1" ] && [ -S "$G2" ] || fail "guest sockets missing"
[ "$(xs xenstore-read /local/domain/$id1/name)" = xsg1 ] || fail "domain name node"

# A guest reads its own nodes with relative paths and writes where it may.
[ "$(XENSTORED_PATH="$G1" xenstore-read name)" = xsg1 ] || fail "guest relative read"
XENSTORED_PATH="$G1" xenstore-write data/secret s1 || fail "guest write in data/"
[ "$(xs xenstore-read /local/domain/$id1/data/secret)" = s1 ] || fail "dom0 sees guest write"
# ...but not another guest's, nor dom0's private nodes.
if XENSTORED_PATH="$G2" xenstore-read "/local/domain/$id1/data/secret" 2>/dev/null; then
	fail "guest 2 read guest 1's node"
fi
if XENSTORED_PATH="$G2" xenstore-write "/local/domain/$id1/data/x" evil 2>/dev/null; then
	fail "guest 2 wrote into guest 1's tree"
fi
if XENSTORED_PATH="$G1" xenstore-read /test/b 2>/dev/null; then fail "guest read dom0 node"; fi
# chmod: dom0 grants guest 1 read access.
xs xenstore-chmod /test/b n0 "r$id1" || fail "chmod"
[ "$(XENSTORED_PATH="$G1" xenstore-read /test/b)" = "two words" ] || fail "read after chmod"
xs xenstore-ls -p /test | grep -q "(n0,r$id1)" || fail "ls -p shows the perms"

# xenstore-watch on @releaseDomain: the registration event, then one on destroy.
XENSTORED_PATH="$D0" xenstore-watch -n 2 @releaseDomain >"$T/watch.out" &
WATCH=$!
wait_for "grep -q '^@releaseDomain$' '$T/watch.out'"
"$BIN/hvctl" --dir "$T" domain destroy xsg2 || fail "destroy"
wait_for "[ \$(grep -c '^@releaseDomain$' '$T/watch.out') -eq 2 ]"
wait "$WATCH" || fail "xenstore-watch exit status"
WATCH=
[ ! -e "$G2" ] || fail "guest 2 socket left behind"
if xs xenstore-exists "/local/domain/$id2"; then fail "guest 2 nodes left behind"; fi

# Clean exit on SIGTERM removes the sockets.
kill "$HV"
wait "$HV" || fail "hvsimd exit status"
HV=
[ ! -e "$D0" ] || fail "xenstore.sock left behind"
[ ! -e "$G1" ] || fail "guest socket left behind"
echo "xs_interop: ok"
