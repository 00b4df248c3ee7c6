#!/usr/bin/env bash
# The side-chain across real `medshard node` processes on 127.0.0.1:
# 3 voters take 10,000 anchors from 4 client processes while the leader is
# SIGKILLed KILLS times (default 2); every acknowledged anchor must be in every node's state
# exactly once, heads equal, all blocks sealed, `chain verify` passing.
# Then: proofs verify offline (and fail with the wrong keys), a flipped
# byte in a chain file is named by `chain verify`, and a full stop/restart
# keeps the heads. Usage: test_chain.sh path/to/medshard
MEDSHARD=${1:?usage: test_chain.sh MEDSHARD}
. "$(dirname "$0")/lib.sh"

cluster_init 3
for i in 1 2 3; do start_node "$i"; done
have_leader() { [ "$(leader_of 1)" != 0 ] && [ -n "$(leader_of 1)" ] && [ "$(head_field 1 voters)" = 3 ]; }
check "3 voters elect a leader and join the cluster map" wait_for 30 have_leader
check "bucket create" "$MEDSHARD" bucket create anchors --ec 2+1 --node "$ADDRS"
"$MEDSHARD" bucket create anchors --ec 2+1 --node "$ADDRS" >/dev/null 2>"$WORK/dup.err"
check "duplicate bucket is refused with a clear error" grep -q "already exists" "$WORK/dup.err"

# 4 client processes, 2,500 anchors each.
for c in 1 2 3 4; do
  "$MEDSHARD" bench anchor --node "$ADDRS" --count 2500 --clients 2 --batch 25 \
    --acks "$WORK/acks$c" >"$WORK/client$c.log" 2>&1 &
  CLIENT[$c]=$!
done
# Sets L to the leader's id as some running node sees it.
find_leader() {
  local i
  for i in 1 2 3; do
    L=$(leader_of "$i")
    [ -n "$L" ] && [ "$L" != 0 ] && [ -n "${PID[$L]:-}" ] && return 0
  done
  return 1
}
for round in $(seq 1 "${KILLS:-2}"); do
  sleep 1.5
  if ! wait_for 30 find_leader; then bad "round $round: no leader within 30 s"; break; fi
  l=$L
  echo "round $round: SIGKILL leader node $l"
  kill_node "$l"
  sleep 2
  start_node "$l"
done
cf=0
for c in 1 2 3 4; do wait "${CLIENT[$c]}" || cf=$((cf + 1)); done
check "all 4 clients finished with every anchor acknowledged" [ "$cf" = 0 ]
cat "$WORK"/acks? > "$WORK/acks"
check "10,000 anchors acknowledged" [ "$(wc -l <"$WORK/acks")" = 10000 ]

converged() {
  local h1 ok=0
  h1=$(head_json 1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["head"], d["leaves"], d["height"]==d["sealed"] and d["height"]>0)')
  for i in 2 3; do
    [ "$(head_json "$i" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["head"], d["leaves"], d["height"]==d["sealed"] and d["height"]>0)')" = "$h1" ] || ok=1
  done
  [ "$ok" = 0 ] && [ "${h1##* }" = True ]
}
check "heads equal on all nodes and every block sealed" wait_for 60 converged
check "exactly 10,000 leaves (no anchor applied twice)" [ "$(head_field 1 leaves)" = 10000 ]
for i in 1 2 3; do
  check "node $i holds every acknowledged anchor at its leaf" \
    "$MEDSHARD" bench anchor --node "${CTL[$i]}" --check "$WORK/acks"
  check "chain verify passes on node $i" "$MEDSHARD" chain verify --node "${CTL[$i]}"
done

# Proofs: offline with the trusted keys; a wrong keys file fails.
"$MEDSHARD" chain keys --node "$ADDRS" -o "$WORK/keys"
check "proof of leaf 1234 fetched" "$MEDSHARD" chain proof 1234 -o "$WORK/p.bin" --node "${CTL[2]}"
check "verify-proof passes with the cluster's keys" "$MEDSHARD" verify-proof "$WORK/p.bin" --keys "$WORK/keys"
python3 - "$WORK/keys" "$WORK/wrongkeys" <<'PY'
import sys, os
lines = open(sys.argv[1]).read().splitlines()
out = [l if not l.startswith("node ") else " ".join(l.split()[:3] + [os.urandom(32).hex()]) for l in lines]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
check "verify-proof fails with the wrong keys" bash -c "! '$MEDSHARD' verify-proof '$WORK/p.bin' --keys '$WORK/wrongkeys'"

# Restart: stop everything, start again, heads unchanged.
before=$(head_field 1 head)
for i in 1 2 3; do stop_node "$i"; done
for i in 1 2 3; do start_node "$i"; done
same_head() { for i in 1 2 3; do [ "$(head_field "$i" head)" = "$before" ] || return 1; done; }
check "after a full restart every node has the same head" wait_for 30 same_head

# Tamper: flip one byte in the middle of node 3's chain file (stopped).
stop_node 3
python3 - "$WORK/n3/chain/chain" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(b)
PY
out=$("$MEDSHARD" chain verify --dir "$WORK/n3" 2>&1); rc=$?
echo "$out"
check "chain verify exits non-zero on a flipped byte" [ "$rc" != 0 ]
check "chain verify names the bad block" grep -q "block [0-9]* is bad" <<<"$out"
check "an intact node still verifies offline" "$MEDSHARD" chain verify --dir "$WORK/n1"
finish
