#!/bin/sh
# hv_domains.sh - the toolstack end to end: hvsimd in a temp dir, hvctl creates, lists (--json,
# parsed) and destroys domains, the real xenstore-utils CLI sees their nodes and @releaseDomain,
# and every error is one line on stderr with a non-zero exit.
set -eu

BIN=${SLUICE_BIN:?run through tests/run.sh}
T=$(mktemp -d /tmp/sluice-hv-domains.XXXXXX)
. "$SLUICE_TOP/tests/integration/lib/common.sh"
HV="$T/hv"
HVPID=""
WPID=""

hvctl() { "$BIN/hvctl" --dir "$HV" "$@"; }
xs() { XENSTORED_PATH="$HV/xenstore.sock" "$@"; }

# expect_error WORDS -- CMD...: CMD fails with exactly one stderr line containing WORDS.
expect_error() {
	words=$1
	shift 2
	if "$@" >"$T/out" 2>"$T/err"; then
		fail "'$*' succeeded"
	fi
	[ "$(wc -l <"$T/err")" -eq 1 ] || { cat "$T/err" >&2; fail "'$*': not one line"; }
	grep -q -- "$words" "$T/err" || { cat "$T/err" >&2; fail "'$*': no '$words'"; }
}

start_hvsimd

# Create: the new domid on stdout.
[ "$(hvctl domain create g1)" = 1 ] || fail "first domid is not 1"
[ "$(hvctl domain create g2 --mem 512M)" = 2 ] || fail "second domid is not 2"
[ -S "$HV/domains/1/xenstore.sock" ] && [ -S "$HV/domains/1/hv.sock" ] || fail "guest sockets"
[ "$(readlink "$HV/names/g2")" = "../domains/2" ] || fail "name link"

# List, parsed as JSON.
hvctl domain list --json >"$T/list.json"
python3 - "$T/list.json" <<'PY' || fail "domain list --json"
import json, sys
doms = {d["name"]: d for d in json.load(open(sys.argv[1]))}
assert set(doms) == {"Domain-0", "g1", "g2"}, doms
assert doms["Domain-0"]["domid"] == 0
assert doms["g1"]["domid"] == 1 and doms["g1"]["mem_bytes"] == 256 << 20
assert doms["g2"]["domid"] == 2 and doms["g2"]["mem_bytes"] == 512 << 20
assert doms["g1"]["guest"] == "none"
PY
hvctl domain list | grep -Eq '^2 +g2 +512M' || fail "domain list table"

# The real xenstore tools see the toolstack's nodes.
xs xenstore-ls /local/domain >"$T/ls"
grep -q 'name = "g1"' "$T/ls" || fail "xenstore-ls lacks g1"
grep -q 'name = "Domain-0"' "$T/ls" || fail "xenstore-ls lacks Domain-0"
[ "$(xs xenstore-read /local/domain/2/memory/target)" = 524288 ] || fail "memory/target"
[ "$(xs xenstore-read /local/domain/1/domid)" = 1 ] || fail "domid node"

# Errors.
expect_error "exists" -- hvctl domain create g1
expect_error "invalid domain name" -- hvctl domain create 'bad/name'
expect_error "invalid domain name" -- hvctl domain create 42
expect_error "bad size" -- hvctl domain create g3 --mem lots
expect_error "16M..16G" -- hvctl domain create g3 --mem 8M
expect_error "16M..16G" -- hvctl domain create g3 --mem 32G
expect_error "no domain named 'nosuch'" -- hvctl domain destroy nosuch
expect_error "no domain 77" -- hvctl domain destroy 77
expect_error "cannot be destroyed" -- hvctl domain destroy 0
expect_error "not running" -- "$BIN/hvctl" --dir "$T/nowhere" domain list
expect_error "another hvsimd is running" -- "$BIN/hvsimd" --dir "$HV"
kill -0 "$HVPID" || fail "hvsimd died"

# Destroy fires @releaseDomain and removes the domain's nodes, sockets and name.
: >"$T/watch"
xs xenstore-watch -n 2 @releaseDomain >"$T/watch" &
WPID=$!
i=0
until [ "$(wc -l <"$T/watch")" -ge 1 ]; do # the watch fires once when set
	i=$((i + 1))
	[ $i -gt 200 ] && fail "xenstore-watch did not start"
	sleep 0.05
done
hvctl domain destroy g1
i=0
while kill -0 "$WPID" 2>/dev/null; do
	i=$((i + 1))
	[ $i -gt 200 ] && fail "@releaseDomain did not fire"
	sleep 0.05
done
wait "$WPID" || fail "xenstore-watch failed"
WPID=""
[ "$(grep -c '@releaseDomain' "$T/watch")" -eq 2 ] || fail "watch output: $(cat "$T/watch")"
if xs xenstore-exists /local/domain/1 2>/dev/null; then fail "/local/domain/1 survived"; fi
[ ! -e "$HV/domains/1" ] && [ ! -e "$HV/names/g1" ] || fail "g1's files survived"

hvctl domain destroy 2
[ "$(hvctl domain list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] ||
	fail "domains left after destroy"
echo "hv_domains: ok"
