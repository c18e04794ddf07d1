#!/bin/sh
# blkctl_offline.sh - blkctl with no blkbackd running: create, list, resize and delete change the
# pool directly (sparse files, metadata), and every mistake is one "blkctl: " line on stderr with
# exit status 1 (2 for a command line blkctl does not understand): no pool, bad sizes, bad
# names, unknown volumes and vdevs, a refused shrink, commands that need the daemon, a daemon
# that holds its lock without answering, no permission.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-blkctl-off.XXXXXX)
P="$T/pool"
HOLDER=""

cleanup() {
	exec 3>&- 2>/dev/null || true
	[ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null && wait "$HOLDER" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/out "$T"/err; do
		[ -f "$f" ] && { echo "--- $f" >&2; cat "$f" >&2; }
	done
	exit 1
}

# ok ARGS...: blkctl succeeds; its stdout is in $T/out.
ok() {
	"$BIN/blkctl" "$@" >"$T/out" 2>"$T/err" || fail "blkctl $* failed (exit $?)"
	[ -s "$T/err" ] && fail "blkctl $* wrote to stderr"
	return 0
}

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

json_get() { # json_get EXPR FILE: evaluate a Python expression over the JSON document j
	python3 -c 'import json,sys; j=json.load(open(sys.argv[2])); print(eval(sys.argv[1]))' "$1" "$2"
}

# --- Help and usage ---
ok --help
cp "$T/out" "$T/help"
for c in create delete list attach detach resize stats; do
	grep -q "^  $c " "$T/help" || fail "--help does not list $c"
	ok "$c" --help
	grep -q "^usage: blkctl .* $c " "$T/out" || fail "$c --help prints no usage line"
done
bad 2 'no command' --pool "$P"
bad 2 "unknown command 'frob'" --pool "$P" frob
bad 2 "unknown option '--frob'" --frob list
bad 2 'no pool given.*BLKCTL_POOL' list
bad 2 "unknown option '--big' for create" --pool "$P" create v --size 1G --big
bad 2 'create needs --size' --pool "$P" create v
bad 2 'needs a value' --pool "$P" create v --size
bad 2 'create needs one volume name' --pool "$P" create --size 1G
bad 2 'resize needs VOL SIZE' --pool "$P" resize v
bad 2 'attach needs VOL DOMAIN VDEV' --pool "$P" attach v g1
bad 2 'detach needs DOMAIN VDEV' --pool "$P" detach g1
bad 2 'stats takes no disk or both' --pool "$P" stats g1

# --- No pool yet ---
bad 1 "no pool at $P" --pool "$P" list
bad 1 "no pool at $P" --pool "$P" delete v

# --- create: the pool is made (with parents), the file is sparse ---
ok --pool "$P" create vol1 --size 20G
grep -q 'created volume vol1 (20G)' "$T/out" || fail "create did not say what it made"
[ "$(stat -c %s "$P/vols/vol1.img")" -eq $((20 << 30)) ] || fail "vol1.img is not 20 GiB"
[ "$(stat -c %b "$P/vols/vol1.img")" -lt 64 ] || fail "vol1.img is not sparse"
[ "$(json_get 'j["size"]' "$P/vols/vol1.json")" -eq $((20 << 30)) ] || fail "metadata size"
[ "$(json_get 'j["store"]' "$P/vols/vol1.json")" = raw ] || fail "metadata store"
BLKCTL_POOL="$P" ok create small --size 512
BLKCTL_POOL="$P/elsewhere" ok --pool "$P" create big.one --size 1T  # --pool wins
[ -e "$P/vols/big.one.img" ] || fail "--pool did not take precedence over BLKCTL_POOL"
ok --pool "$T/a/b/pool2" create v --size 4K
[ -e "$T/a/b/pool2/vols/v.img" ] || fail "create did not make the pool's parents"

bad 1 "a volume named 'vol1' exists" --pool "$P" create vol1 --size 1G
[ "$(stat -c %s "$P/vols/vol1.img")" -eq $((20 << 30)) ] || fail "a refused create changed vol1"
bad 1 'positive multiple of 512' --pool "$P" create v --size 1000
bad 1 'positive multiple of 512' --pool "$P" create v --size 0
bad 1 "bad size 'abc'" --pool "$P" create v --size abc
bad 1 "bad size '12X'" --pool "$P" create v --size 12X
bad 1 "bad size '-1G'" --pool "$P" create v --size -1G
bad 1 'too large' --pool "$P" create v --size 99999999999P
bad 1 'too large' --pool "$P" create v --size 16383P
bad 1 "'../x' is not a valid volume name" --pool "$P" create ../x --size 1G
bad 1 "'.hidden' is not a valid volume name" --pool "$P" create .hidden --size 1G
bad 1 "is not a valid volume name" --pool "$P" create "a b" --size 1G
long=$(printf 'v%.0s' $(seq 64))
bad 1 "is not a valid volume name" --pool "$P" create "$long" --size 1G
[ ! -e "$T/x.img" ] || fail "a bad name escaped the pool"

# --- list ---
ok --pool "$P" list
head -1 "$T/out" | grep -q '^NAME  *SIZE  *STORE$' || fail "list header (no daemon: no ATTACHED)"
grep -Eq '^big\.one +1T +raw$' "$T/out" || fail "list: big.one"
grep -Eq '^small +512 +raw$' "$T/out" || fail "list: small"
grep -Eq '^vol1 +20G +raw$' "$T/out" || fail "list: vol1"
[ "$(wc -l <"$T/out")" -eq 4 ] || fail "list: not 3 volumes"
ok --pool "$P" list --json
[ "$(json_get '",".join(v["name"] for v in j)' "$T/out")" = "big.one,small,vol1" ] ||
	fail "list --json: names or order"
[ "$(json_get 'j[2]["size"]' "$T/out")" -eq $((20 << 30)) ] || fail "list --json: size"
[ "$(json_get '"attached" in j[0]' "$T/out")" = False ] || fail "list --json: attached offline"

# --- resize offline ---
ok --pool "$P" resize vol1 30G
grep -q 'from 20G to 30G (offline)' "$T/out" || fail "resize did not say what it did"
[ "$(stat -c %s "$P/vols/vol1.img")" -eq $((30 << 30)) ] || fail "resize: file size"
[ "$(json_get 'j["size"]' "$P/vols/vol1.json")" -eq $((30 << 30)) ] || fail "resize: metadata"
bad 1 "smaller than volume 'vol1' \(30G\).*--shrink" --pool "$P" resize vol1 10G
[ "$(stat -c %s "$P/vols/vol1.img")" -eq $((30 << 30)) ] || fail "a refused shrink shrank"
[ "$(json_get 'j["size"]' "$P/vols/vol1.json")" -eq $((30 << 30)) ] || fail "refused shrink: meta"
printf 'keep' | dd of="$P/vols/vol1.img" bs=1 seek=4096 conv=notrunc status=none
ok --pool "$P" resize vol1 8K --shrink
[ "$(stat -c %s "$P/vols/vol1.img")" -eq 8192 ] || fail "shrink: file size"
[ "$(dd if="$P/vols/vol1.img" bs=1 skip=4096 count=4 status=none)" = keep ] ||
	fail "shrink lost data below the new end"
bad 1 "no volume named 'nope'" --pool "$P" resize nope 1G
bad 1 'positive multiple of 512' --pool "$P" resize vol1 100
bad 1 "bad size" --pool "$P" resize vol1 lots

# --- Commands that need blkbackd ---
NR="blkbackd is not running on pool $P \(start: blkbackd --hv-dir DIR --pool $P\)"
bad 1 "$NR" --pool "$P" attach vol1 g1 xvda
bad 1 "$NR" --pool "$P" detach g1 xvda
bad 1 "$NR" --pool "$P" stats
bad 1 "$NR" --pool "$P" stats g1 xvda --json
# The arguments are checked before the daemon is looked for.
bad 1 "'xvd1' is not a Xen virtual disk name" --pool "$P" attach vol1 g1 xvd1
bad 1 "'hda' is not a Xen virtual disk name" --pool "$P" attach vol1 g1 hda
bad 1 "'xvda1' is not a Xen virtual disk name" --pool "$P" detach g1 xvda1
bad 1 "'xvdabcde' is not a Xen virtual disk name" --pool "$P" stats g1 xvdabcde
bad 1 "no volume named 'ghost'" --pool "$P" attach ghost g1 xvda

# A socket file left by a daemon that died is not a running daemon.
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' \
	"$P/blkbackd.sock"
[ -S "$P/blkbackd.sock" ] || fail "could not leave a stale socket"
bad 1 "$NR" --pool "$P" stats
ok --pool "$P" resize small 1K

# A daemon that holds its lock but does not answer (starting or stopping): nothing offline.
mkfifo "$T/hold"
python3 -c '
import fcntl, sys
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()' "$P/blkbackd.lock" <"$T/hold" >"$T/locked" &
HOLDER=$!
exec 3>"$T/hold"
i=0
until grep -q locked "$T/locked" 2>/dev/null; do
	i=$((i + 1))
	[ $i -gt 200 ] && fail "the lock holder did not start"
	sleep 0.05
done
bad 1 "blkbackd on pool $P is starting or stopping" --pool "$P" resize small 2K
bad 1 "blkbackd on pool $P is starting or stopping" --pool "$P" delete small
[ "$(json_get 'j["size"]' "$P/vols/small.json")" -eq 1024 ] || fail "changed under a held lock"
exec 3>&-
wait "$HOLDER"
HOLDER=""
ok --pool "$P" resize small 2K

# --- delete offline ---
ok --pool "$P" delete big.one
[ ! -e "$P/vols/big.one.img" ] && [ ! -e "$P/vols/big.one.json" ] || fail "delete left files"
bad 1 "no volume named 'big.one'" --pool "$P" delete big.one
bad 1 "is not a valid volume name" --pool "$P" delete ../pool/vols/vol1
ok --pool "$P" list
[ "$(wc -l <"$T/out")" -eq 3 ] || fail "list after delete"

# --- Corrupt metadata is named, not guessed at ---
echo '{"name":"vol1","size":"big"}' >"$P/vols/vol1.json"
bad 1 "volume 'vol1' in pool $P has unreadable metadata" --pool "$P" resize vol1 1G

# --- No permission (as an unprivileged user: as root, through setpriv) ---
rm -f "$P/blkbackd.sock"
chmod 0755 "$T"
if [ "$(id -u)" -eq 0 ]; then
	AS="setpriv --reuid=65534 --regid=65534 --clear-groups"
else
	AS=""
	chmod 0555 "$P/vols"
fi
if [ -n "$AS" ] && ! $AS "$BIN/blkctl" --help >/dev/null 2>&1; then
	echo "blkctl_offline: skipping the permission checks (blkctl not runnable as nobody)"
else
	rc=0
	$AS "$BIN/blkctl" --pool "$P" create nobodys --size 1M >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" -eq 1 ] || fail "create without permission: exit $rc"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "create without permission: not one line"
	grep -q "^blkctl: no permission to create volume 'nobodys' in pool $P" "$T/err" ||
		fail "create without permission: $(cat "$T/err")"
	rc=0
	$AS "$BIN/blkctl" --pool "$P" resize small 4K >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" -eq 1 ] || fail "resize without permission: exit $rc"
	grep -q "^blkctl: no permission to resize volume 'small'" "$T/err" ||
		fail "resize without permission: $(cat "$T/err")"
	$AS "$BIN/blkctl" --pool "$P" list >"$T/out" 2>"$T/err" || fail "list needs only read access"
fi
chmod 0755 "$P/vols"
echo "blkctl_offline: ok"
