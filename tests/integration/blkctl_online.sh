#!/bin/sh
# blkctl_online.sh - blkctl against a running hvsimd and blkbackd: attach writes the toolstack's
# xenstore nodes (devid by Xen's vdev numbering, domain by name or id, read-only), list shows
# who uses each volume, delete is refused while attached, stats counts exactly what a guest did
# (table and --json), resize is online (the connected vbd's sectors change) and a shrink needs
# --shrink, detach removes the disk; the daemon's refusals come out as one "blkctl: " line. Once
# blkbackd stops, the daemon's commands say it is not running and resize works offline.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
GUEST="$BIN/../tests/bb-guest"
T=$(mktemp -d /tmp/sluice-blkctl-on.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
HV="$T/hv"
P="$T/pool"
HVPID=""
BBPID=""
WPID=""

[ -x "$BIN/blkbackd" ] || fail "$BIN/blkbackd is not built"
[ -x "$GUEST" ] || fail "$GUEST is not built"

ok() { # ok ARGS...: blkctl succeeds; stdout in $T/out
	"$BIN/blkctl" --pool "$P" "$@" >"$T/out" 2>"$T/err" || fail "blkctl $* failed (exit $?)"
	[ -s "$T/err" ] && fail "blkctl $* wrote to stderr"
	return 0
}

bad() { # bad STATUS PATTERN ARGS...: exit STATUS, one "blkctl: " line matching PATTERN
	want=$1
	pat=$2
	shift 2
	rc=0
	"$BIN/blkctl" --pool "$P" "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" -eq "$want" ] || fail "blkctl $*: exit $rc, expected $want"
	[ "$(wc -l <"$T/err")" -eq 1 ] || fail "blkctl $*: not exactly one line on stderr"
	grep -q '^blkctl: ' "$T/err" || fail "blkctl $*: the line does not start with 'blkctl: '"
	grep -Eq -- "$pat" "$T/err" || fail "blkctl $*: '$(cat "$T/err")' does not say '$pat'"
	return 0
}

json_get() { # json_get EXPR FILE: evaluate a Python expression over the JSON document j
	python3 -c 'import json,sys; j=json.load(open(sys.argv[2])); print(eval(sys.argv[1]))' "$1" "$2"
}

xs() { XENSTORED_PATH="$HV/xenstore.sock" "$@"; }

# wait_state DOM VDEV STATE: the vbd's backend reaches STATE (bounded: 10 s)
wait_state() {
	i=0
	while :; do
		"$BIN/blkctl" --pool "$P" stats "$1" "$2" --json >"$T/state.json" 2>/dev/null &&
			[ "$(json_get 'j[0]["state"]' "$T/state.json")" = "$3" ] && return 0
		i=$((i + 1))
		[ $i -gt 200 ] && fail "$1/$2 did not reach $3"
		sleep 0.05
	done
}

start_hvsimd
"$BIN/hvctl" --dir "$HV" domain create g1 --mem 128M >/dev/null || fail "domain create"
ok create vol1 --size 64M
ok create vol2 --size 16M
ok create vol3 --size 1M
"$BIN/blkbackd" --hv-dir "$HV" --pool "$P" 2>"$T/blkbackd.log" &
BBPID=$!
wait_sock "$P/blkbackd.sock"

# --- attach: nodes as a toolstack writes them, devid by Xen's numbering ---
ok attach vol1 g1 xvda
grep -q 'attached vol1 to domain g1 (domid 1) as xvda (devid 51712)' "$T/out" ||
	fail "attach output: $(cat "$T/out")"
xs xenstore-exists /local/domain/0/backend/vbd/1/51712 || fail "no backend directory"
xs xenstore-exists /local/domain/1/device/vbd/51712 || fail "no frontend directory"
[ "$(xs xenstore-read /local/domain/0/backend/vbd/1/51712/params)" = vol1 ] || fail "params"
ok attach vol2 1 xvdb
grep -q 'as xvdb (devid 51728)' "$T/out" || fail "attach by domid: $(cat "$T/out")"
ok attach vol3 g1 xvdq --ro
grep -q 'as xvdq (devid 268439552), read-only' "$T/out" || fail "extended devid / ro"
[ "$(xs xenstore-read /local/domain/0/backend/vbd/1/268439552/mode)" = r ] || fail "mode not r"

bad 1 "no domain named 'g9'" attach vol1 g9 xvdc
bad 1 "no volume named 'nope'" attach nope g1 xvdc
bad 1 "'sda' is not a Xen virtual disk name" attach vol1 g1 sda
rc=0
"$BIN/blkctl" --pool "$P" attach vol1 g1 xvda >"$T/out" 2>"$T/err" || rc=$?
[ "$rc" -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q '^blkctl: ' "$T/err" ||
	fail "attaching xvda twice: exit $rc, '$(cat "$T/err")'"

# --- list: who uses each volume ---
ok list
head -1 "$T/out" | grep -Eq '^NAME +SIZE +STORE +ATTACHED$' || fail "list header"
grep -Eq '^vol1 +64M +raw +g1:xvda$' "$T/out" || fail "list: vol1"
grep -Eq '^vol2 +16M +raw +g1:xvdb$' "$T/out" || fail "list: vol2"
grep -Eq '^vol3 +1M +raw +g1:xvdq$' "$T/out" || fail "list: vol3"
ok list --json
[ "$(json_get 'j[0]["attached"][0]["domain"] + ":" + j[0]["attached"][0]["vdev"]' "$T/out")" = \
	g1:xvda ] || fail "list --json attached"
[ "$(json_get 'j[0]["attached"][0]["domid"]' "$T/out")" -eq 1 ] || fail "list --json domid"

# --- delete refused while attached ---
bad 1 "volume 'vol1' is attached \(g1:xvda\); detach it first" delete vol1
[ -e "$P/vols/vol1.img" ] || fail "a refused delete deleted"

# --- stats: exactly what the guest did ---
"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvdb --log "$T/acked" --count 64 --depth 8 \
	>"$T/writer.log" 2>&1 || fail "guest writes to xvdb"
ok stats g1 xvdb --json
[ "$(json_get 'len(j)' "$T/out")" -eq 1 ] || fail "stats of one disk is not one vbd"
[ "$(json_get 'j[0]["wr_req"]' "$T/out")" -eq 64 ] || fail "wr_req != 64"
[ "$(json_get 'j[0]["wr_sect"]' "$T/out")" -eq 512 ] || fail "wr_sect != 512"
[ "$(json_get 'j[0]["errors"]' "$T/out")" -eq 0 ] || fail "errors"
[ "$(json_get 'j[0]["wr_lat_p99_us"] >= j[0]["wr_lat_p50_us"] > 0' "$T/out")" = True ] ||
	fail "write latencies"
ok stats --json
[ "$(json_get 'len(j)' "$T/out")" -eq 3 ] || fail "stats --json: not every vbd"
ok stats
head -1 "$T/out" | grep -Eq '^DOMAIN +VDEV +VOL +STATE +rd_req +wr_req +f_req +ds_req +oo_req +rd_sect +wr_sect +errors +inflight +rd_p50 +rd_p99 +wr_p50 +wr_p99$' ||
	fail "stats header: $(head -1 "$T/out")"
grep -Eq '^g1 +xvdb +vol2 +[A-Za-z]+ +[0-9]+ +64 +[0-9]+ +[0-9]+ +0 +[0-9]+ +512 +0 +0 ' \
	"$T/out" || fail "stats row of xvdb"
grep -Eq '^g1 +xvdq +vol3 \(ro\) ' "$T/out" || fail "stats row of xvdq"
bad 1 "domain g1 has no disk xvdc" stats g1 xvdc
bad 1 "no domain named 'g9'" stats g9 xvda

# --- resize online: the connected guest's disk grows ---
"$GUEST" write --hv-dir "$HV" --domain g1 --vdev xvda --log "$T/acked-a" --count 100000000 \
	--depth 4 >"$T/writer-a.log" 2>&1 &
WPID=$!
wait_state g1 xvda Connected
[ "$(xs xenstore-read /local/domain/0/backend/vbd/1/51712/sectors)" -eq 131072 ] ||
	fail "sectors before the resize"
ok resize vol1 128M
grep -q 'resized volume vol1 from 64M to 128M (online)' "$T/out" || fail "resize output"
[ "$(xs xenstore-read /local/domain/0/backend/vbd/1/51712/sectors)" -eq 262144 ] ||
	fail "the connected vbd's sectors did not change"
[ "$(json_get 'j["size"]' "$P/vols/vol1.json")" -eq $((128 << 20)) ] || fail "metadata size"
[ "$(stat -c %s "$P/vols/vol1.img")" -eq $((128 << 20)) ] || fail "file size"
bad 1 "smaller than volume 'vol1' \(128M\).*--shrink" resize vol1 32M
[ "$(xs xenstore-read /local/domain/0/backend/vbd/1/51712/sectors)" -eq 262144 ] ||
	fail "a refused shrink changed sectors"

# --- detach while the guest writes: it completes, the guest sees its disk go away ---
ok detach g1 xvda
grep -q 'detached xvda from domain g1' "$T/out" || fail "detach output"
rc=0
wait "$WPID" || rc=$?
WPID=""
[ "$rc" -eq 3 ] || fail "the guest did not see its disk go away (exit $rc)"
if xs xenstore-exists /local/domain/0/backend/vbd/1/51712 2>/dev/null; then
	fail "the backend directory is still there"
fi
bad 1 "domain g1 has no disk xvda" detach g1 xvda
bad 1 "no domain named 'g9'" detach g9 xvdb

# A volume no guest uses is resized by the daemon too, and a shrink needs --shrink.
bad 1 "smaller than volume 'vol1' \(128M\).*--shrink" resize vol1 32M
ok resize vol1 32M --shrink
grep -q 'from 128M to 32M (online)' "$T/out" || fail "shrink output"
[ "$(stat -c %s "$P/vols/vol1.img")" -eq $((32 << 20)) ] || fail "shrunk file size"
bad 1 "no volume named 'nope'" resize nope 1G
ok list
grep -Eq '^vol1 +32M +raw +-$' "$T/out" || fail "list after detach"
ok delete vol1
[ ! -e "$P/vols/vol1.img" ] || fail "delete after detach"

# --- blkbackd stops: its commands say so, resize works offline ---
kill -TERM "$BBPID"
wait "$BBPID" || { BBPID=""; fail "blkbackd did not exit 0"; }
BBPID=""
NR="blkbackd is not running on pool $P \(start: blkbackd --hv-dir DIR --pool $P\)"
bad 1 "$NR" stats
bad 1 "$NR" attach vol2 g1 xvdc
bad 1 "$NR" detach g1 xvdb
ok resize vol2 32M
grep -q 'from 16M to 32M (offline)' "$T/out" || fail "offline resize output"
ok list
head -1 "$T/out" | grep -Eq '^NAME +SIZE +STORE$' || fail "list without the daemon"
echo "blkctl_online: ok"
