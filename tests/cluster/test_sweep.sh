#!/usr/bin/env bash
# The orphan sweep (cluster/sweep.c) on a 6-node dev cluster (3 voters,
# 4+2) started with a short grace and interval: a sealed shard that no
# manifest names, written straight to a node's data port, is reclaimed
# once older than the grace and never before; `rm` of an object frees its
# shards on every node that held them; every other object keeps all its
# shards and reads back byte-identical after many passes; with no Raft
# leader an old orphan is kept, and reclaimed once the voters are back.
# Also SHARD_LIST's bad input on a live node and bad sweep flags.
# Usage: test_sweep.sh path/to/medshard
MEDSHARD=${1:?usage: test_sweep.sh MEDSHARD}
MEDSHARD=$(cd "$(dirname "$MEDSHARD")" && pwd)/$(basename "$MEDSHARD")
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/devlib.sh"
GRACE=12    # seconds: long enough to see a young orphan survive several passes
INTERVAL=1

TMO=120
raw() { local node=$1; shift; timeout -k 2 30 "$PY" "$HERE/data_raw.py" "${DATA[$node]}" "$@" 2>&1; }
# stat_code NODE OID INDEX: the code of SHARD_STAT of (OID, INDEX) on NODE.
stat_code() { raw "$1" --oid "$2" --index "$3" stat | sed -n 's/^code=\([^ ]*\).*/\1/p'; }
present() { [ "$(stat_code "$@")" = 0 ]; }
gone() { local c; c=$(stat_code "$@"); [ "$c" = MSD_EDELETED ] || [ "$c" = MSD_ENOSHARD ]; }
# passes NODE: how many sweep passes node NODE has logged.
passes() { grep -c "sweep: node $1 pass done" "$D/n$1.log"; }
# orphan NODE INDEX: seals a 5000-byte shard with a fresh random object id
# on NODE's data port; prints the id.
orphan() {
  local oid out
  oid=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  out=$(raw "$1" --oid "$oid" --index "$2" put 5000)
  grep -q '^sealed size=5000' <<<"$out" || { echo "orphan on node $1: $out" >&2; return 1; }
  echo "$oid"
}

declare -A OID        # per key: its object id
declare -A HOLDER     # "KEY INDEX" -> node holding that shard

# store KEY BYTES: puts BYTES random bytes as default/KEY and records its
# object id and the node of each shard (from `stat --json`).
src() { echo "$WORK/src.${1//\//_}"; }
store() {
  head -c "$2" /dev/urandom >"$(src "$1")"
  if ! ms put "$(src "$1")" "default/$1" --json >"$WORK/put.json" 2>"$WORK/put.err"; then
    bad "put default/$1: $(cat "$WORK/put.err")"; return 1; fi
  OID[$1]=$(js "$WORK/put.json" "d['object_id']")
  ms stat "default/$1" --json >"$WORK/stat.json" || { bad "stat default/$1"; return 1; }
  while read -r idx node; do HOLDER["$1 $idx"]=$node; done < <(
    js "$WORK/stat.json" "'\n'.join('%d %d' % (s['index'], s['node']) for s in d['shards'])")
  ok "put default/$1 ($2 bytes, object ${OID[$1]})"
}
# all_shards KEY WANT: every shard of KEY on its node is present (WANT=yes)
# or gone (WANT=no).
all_shards() {
  local key=$1 want=$2 i
  for i in 0 1 2 3 4 5; do
    if [ "$want" = yes ]; then present "${HOLDER[$key $i]}" "${OID[$key]}" "$i" || return 1
    else gone "${HOLDER[$key $i]}" "${OID[$key]}" "$i" || return 1; fi
  done
}
get_same() { # KEY: `get` reads it back byte-identical
  rm -f "$WORK/got"
  ms get "default/$1" "$WORK/got" 2>"$WORK/get.err" && cmp -s "$WORK/got" "$(src "$1")"
}

# ================================================================
echo "== bad sweep flags"
expect "dev up --orphan-grace 0 is refused" 2 'orphan-grace.*seconds' \
  "$MEDSHARD" dev up --dir "$WORK/nope" --orphan-grace 0
expect "dev up --sweep-interval abc is refused" 2 'sweep-interval.*seconds' \
  "$MEDSHARD" dev up --dir "$WORK/nope" --sweep-interval abc
expect "dev status --orphan-grace does not apply" 2 'does not apply' \
  "$MEDSHARD" dev status --dir "$WORK/nope" --orphan-grace 5
expect "node --orphan-grace 99999999999 is refused" 2 'orphan-grace.*seconds' \
  "$MEDSHARD" node --id 1 --dir "$WORK/nope" --orphan-grace 99999999999
printf 'sweep_interval = 0\n' >"$WORK/bad.ini"
expect "node config sweep_interval = 0 is refused" 2 'sweep_interval must be' \
  "$MEDSHARD" node --config "$WORK/bad.ini" --id 1 --dir "$WORK/nope" --raft 127.0.0.1:1 \
  --control 127.0.0.1:2 --secret 00112233445566778899aabbccddeeff --peer 1,127.0.0.1:1,127.0.0.1:2

# ================================================================
echo "== dev up: 6 nodes, 3 voters, 4+2, grace $GRACE s, a pass every $INTERVAL s"
expect "dev up --orphan-grace $GRACE --sweep-interval $INTERVAL" 0 'bucket +default \(4\+2\)' \
  timeout 120 "$MEDSHARD" dev up --nodes 6 --voters 3 --ec 4+2 --dir D \
  --orphan-grace "$GRACE" --sweep-interval "$INTERVAL"
remember_pids
check "the cluster is healthy" wait_for 30 healthy
if ! healthy; then finish; exit; fi
for i in 1 2 3 4 5 6; do DATA[$i]=$(ini "$i" data); done
check "the state file records the sweep settings" \
  grep -qx "orphan_grace = $GRACE" "$D/cluster.ini"
started() { for i in 1 2 3 4 5 6; do grep -q "sweep: node $i .* over $GRACE s ago, a pass every $INTERVAL s" "$D/n$i.log" || return 1; done; }
check "every node runs its sweep with those settings" wait_for 10 started

echo "== SHARD_LIST bad input on node 2"
out=$(raw 2 list 0)
check "limit 0: MSD_EPARAM ($out)" grep -q '^code=MSD_EPARAM' <<<"$out"
out=$(raw 2 list 10 0102030405)
check "a 5-byte cursor: MSD_EPARAM ($out)" grep -q '^code=MSD_EPARAM' <<<"$out"
out=$(raw 2 list 10 000102030405060708090a0b0c0d0e0f10)
check "a 17-byte cursor: MSD_EPARAM ($out)" grep -q '^code=MSD_EPARAM' <<<"$out"
out=$(raw 2 list 18446744073709551615)
check "a huge limit is clipped, not refused ($(head -1 <<<"$out"))" grep -q '^code=0 ' <<<"$out"
check "node 2 still runs" kill -0 "$(ini 2 pid)"
check "node 2 logged the refusals with a reason" grep -q 'refused: SHARD_LIST cursor' "$D/n2.log"

# ================================================================
echo "== objects that must survive, and one to delete"
store keep/small 300000
store keep/mib $(((1 << 20) + 1))
store keep/big $((5 << 20))
store doomed $((2 << 20))
for k in keep/small keep/mib keep/big doomed; do
  check "every shard of $k is on the node its shard map names" all_shards "$k" yes
done

# ================================================================
echo "== an orphan on node 4, and rm of doomed (at $(since "$T0") s)"
T_A=$(now)
A=$(orphan 4 2)
check "orphan A sealed on node 4 (object $A, shard 2)" test -n "$A"
P0=$(passes 4)
expect "rm default/doomed" 0 'deleted' ms rm default/doomed
# (d) Younger than the grace: several passes go by and it stays.
sleep 5
check "orphan A, younger than the grace, is still there" present 4 "$A" 2
NP=$(( $(passes 4) - P0 ))
AGE=$(since "$T_A")
check "... after $NP passes, $AGE s after its seal (at least 3 passes, under $GRACE s)" \
  awk -v n="$NP" -v a="$AGE" -v g="$GRACE" 'BEGIN { exit !(n >= 3 && a < g) }'
# (a) Older than the grace: reclaimed, logged, and not before the grace.
check "orphan A is reclaimed within grace + 20 s" wait_for $((GRACE + 20)) gone 4 "$A" 2
T_GONE=$(since "$T_A")
check "... not before the grace ($T_GONE s after its seal >= $GRACE s)" \
  awk -v t="$T_GONE" -v g="$GRACE" 'BEGIN { exit !(t >= g - 0.5) }'
check "... node 4 logged it with the reason" \
  grep -q "sweep: node 4 reclaimed shard 2 of object $A .*never committed" "$D/n4.log"
# (b) The deleted object's shards go from every node that held them.
check "every shard of doomed is gone from its node" wait_for 30 all_shards doomed no
for i in 0 1 2 3 4 5; do
  n=${HOLDER[doomed $i]}
  check "node $n logged reclaiming shard $i of doomed (deleted)" \
    grep -q "sweep: node $n reclaimed shard $i of object ${OID[doomed]} .*was deleted" "$D/n$n.log"
done

# ================================================================
echo "== the live objects, after more passes (at $(since "$T0") s)"
P0=$(passes 1)
more_passes() { [ $(( $(passes 1) - P0 )) -ge 4 ]; }
check "4 more passes on node 1" wait_for 30 more_passes
for k in keep/small keep/mib keep/big; do
  check "every shard of $k is still on its node" all_shards "$k" yes
  check "get $k is byte-identical" get_same "$k"
  check "no node logged reclaiming a shard of $k" bash -c "! grep -q 'reclaimed shard .* of object ${OID[$k]}' '$D'/n*.log"
done
summary() { grep "sweep: node $1 pass done" "$D/n$1.log" | tail -1; }
check "node 1's passes count its old shards as candidates ($(summary 1 | sed 's/.*pass done/pass done/'))" \
  bash -c "grep 'sweep: node 1 pass done' '$D/n1.log' | tail -1 | grep -Eq ' [1-9][0-9]* older than the $GRACE s grace, 0 reclaimed, 0 kept in doubt'"

# ================================================================
echo "== no leader: voters 2 and 3 SIGKILLed (at $(since "$T0") s)"
expect "dev kill 2" 0 "killed" ms dev kill 2 --dir D
expect "dev kill 3" 0 "killed" ms dev kill 3 --dir D
no_leader() { [ "$(st '[n["raft_state"] for n in d["nodes"] if n["id"] == 1][0]')" != leader ]; }
check "node 1 does not lead any more" wait_for 20 no_leader
T_C=$(now)
C=$(orphan 4 1)
check "orphan C sealed on node 4 (object $C, shard 1)" test -n "$C"
old_enough() { awk -v a="$T_C" -v b="$(now)" -v g="$GRACE" 'BEGIN { exit !(b - a >= g + 5) }'; }
wait_for $((GRACE + 20)) old_enough
check "orphan C, $(since "$T_C") s after its seal, is kept while there is no leader" present 4 "$C" 1
doubt() { grep "sweep: node 4 pass done" "$D/n4.log" | tail -3 | grep -q 'kept in doubt: '; }
check "node 4's passes say why it kept it ($(summary 4 | sed 's/.*kept in doubt/kept in doubt/'))" doubt
expect "dev start 2" 0 "started" ms dev start 2 --dir D
expect "dev start 3" 0 "started" ms dev start 3 --dir D
remember_pids
check "the cluster is healthy again" wait_for 60 healthy
check "orphan C is reclaimed once there is a leader" wait_for 30 gone 4 "$C" 1
check "... and node 4 logged it" grep -q "sweep: node 4 reclaimed shard 1 of object $C " "$D/n4.log"
for k in keep/small keep/mib keep/big; do
  check "every shard of $k is still on its node" all_shards "$k" yes
  check "get $k is byte-identical" get_same "$k"
done

# ================================================================
echo "== stop"
expect "dev down stops all 6 (SIGTERM)" 0 'stopped nodes 1 2 3 4 5 6' ms dev down --dir D
for i in 1 2 3 4 5 6; do
  check "node $i logged no sanitizer report" bash -c "! grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' '$D/n$i.log'"
done
finish
