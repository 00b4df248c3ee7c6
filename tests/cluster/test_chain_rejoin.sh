#!/usr/bin/env bash
# Restart and re-join across real `medshard node` processes on 127.0.0.1:
# 3 voters with a low Raft snapshot threshold take anchors; a full
# stop/restart keeps every head; then node 3 is stopped, its state wiped,
# more anchors committed while it is down (so the leader has compacted
# its log past anything node 3 holds), and node 3 restarted: it must catch
# up through an installed snapshot (its log says so), reach the same head
# and leaves, pass `chain verify`, hold every acknowledged anchor, and
# cosign new blocks again.
#
# WIPE=state (default) removes <dir>/raft and <dir>/chain and keeps
# <dir>/node.key. A node that comes back with a new key under its old id
# is no cosigner any more: its NodeJoin is refused ("node id 3 is taken by
# a node with another key"), or never sent once the snapshot lists id 3,
# and every Cosign is refused ("signature does not verify with the
# signer's key"); the node itself logs no error. WIPE=all removes the
# whole data dir, key included, to show that (two checks then fail).
# Usage: test_chain_rejoin.sh path/to/medshard
MEDSHARD=${1:?usage: test_chain_rejoin.sh MEDSHARD}
. "$(dirname "$0")/lib.sh"

# Snapshot every 64 entries, keep 16 behind it: a few thousand anchors in
# small batches make dozens of snapshots. No flag exists for these keys.
NODE_CONFIG=$WORK/node.ini
printf '[raft]\nsnapshot_threshold = 64\nsnapshot_trailing = 16\n' >"$NODE_CONFIG"

cluster_init 3
for i in 1 2 3; do start_node "$i"; done
have_leader() { [ "$(leader_of 1)" != 0 ] && [ -n "$(leader_of 1)" ] && [ "$(head_field 1 voters)" = 3 ]; }
check "3 voters elect a leader and join the cluster map" wait_for 30 have_leader
check "bucket create" "$MEDSHARD" bucket create anchors --ec 2+1 --node "$ADDRS"

# Small batches: many Raft entries, so the threshold of 64 is crossed often.
anchors() { # anchors N ACKS NODES
  "$MEDSHARD" bench anchor --node "$3" --count "$1" --clients 2 --batch 5 --acks "$2" \
    >>"$WORK/bench.log" 2>&1
}
check "1,500 anchors acknowledged" anchors 1500 "$WORK/acks1" "$ADDRS"
check "every acknowledgement logged" [ "$(wc -l <"$WORK/acks1")" = 1500 ]

# summary I: "head leaves height" once every block on node I is sealed.
summary() {
  head_json "$1" | python3 -c 'import json,sys
d = json.load(sys.stdin)
if d["height"] > 0 and d["sealed"] == d["height"] and not d["alarm"]:
    print(d["head"], d["leaves"], d["height"])' 2>/dev/null
}
same_summary() { # same_summary I J...: nodes agree, all sealed
  local want got i
  want=$(summary "$1"); [ -n "$want" ] || return 1
  for i in "${@:2}"; do got=$(summary "$i"); [ "$got" = "$want" ] || return 1; done
}
check "heads equal on all nodes, every block sealed" wait_for 30 same_summary 1 2 3
snaps() { ls "$WORK/n$1/raft" 2>/dev/null | grep -c '^snapshot-.*[0-9]$'; }
check "the leader has taken Raft snapshots" [ "$(snaps "$(leader_of 1)")" -gt 0 ]

# Restart: stop all, start again, every head unchanged (a node loads its
# own snapshot, then the log after it).
before=$(summary 1)
for i in 1 2 3; do stop_node "$i"; done
for i in 1 2 3; do start_node "$i"; done
restarted() { for i in 1 2 3; do [ "$(summary "$i")" = "$before" ] || return 1; done; }
check "after a full restart every node has the same head, leaves and height" wait_for 30 restarted

# Wipe node 3 while it is down; the others carry on.
stop_node 3
key_before=$(od -An -tx1 -j32 -N32 "$WORK/n3/node.key" | tr -d ' \n')
if [ "${WIPE:-state}" = all ]; then
  rm -rf "$WORK/n3"
else
  rm -rf "$WORK/n3/raft" "$WORK/n3/chain"
fi
echo "node 3: wiped (${WIPE:-state})"
check "1,500 more anchors acknowledged with node 3 down" anchors 1500 "$WORK/acks2" "${CTL[1]},${CTL[2]}"
check "nodes 1 and 2 agree, every block sealed" wait_for 30 same_summary 1 2
# Node 3 has nothing; the leader's log must no longer start at index 1, or
# plain AppendEntries would do and no snapshot would be sent.
l=$(leader_of 1)
newest_snapshot() { ls "$WORK/n$l/raft" | sed -n 's/^snapshot-[0-9]*-\([0-9]*\)-[0-9]*$/\1/p' | sort -n | tail -1; }
oldest_segment() { ls "$WORK/n$l/raft" | sed -n 's/^0*\([0-9]*\)-[0-9]*$/\1/p' | sort -n | head -1; }
compacted() { local s o; s=$(newest_snapshot); o=$(oldest_segment); [ "${s:-0}" -gt 64 ] && [ "${o:-2}" -gt 1 ]; }
echo "leader $l: newest snapshot at index $(newest_snapshot), oldest closed segment from index $(oldest_segment)"
check "the leader compacted its log (a snapshot past index 64, no segment from index 1)" compacted

start_node 3
caught_up() { same_summary 1 2 3; }
check "node 3 catches up: same head, leaves and height as the others" wait_for 30 caught_up
check "node 3 installed a snapshot (its log says so)" \
  grep -q "chain: restored a snapshot at Raft index" "$WORK/n3.log"
grep "restored a snapshot" "$WORK/n3.log" | head -3
check "node 3 kept its key" [ "$(od -An -tx1 -j32 -N32 "$WORK/n3/node.key" | tr -d ' \n')" = "$key_before" ]
check "chain verify passes on node 3" "$MEDSHARD" chain verify --node "${CTL[3]}"
check "node 3 holds every anchor acknowledged before the wipe" \
  "$MEDSHARD" bench anchor --node "${CTL[3]}" --check "$WORK/acks1"
check "node 3 holds every anchor acknowledged while it was down" \
  "$MEDSHARD" bench anchor --node "${CTL[3]}" --check "$WORK/acks2"

# Node 3 is a full member again: its cosignatures count on new blocks.
h0=$(head_field 1 height)
check "100 anchors after the re-join" anchors 100 "$WORK/acks3" "$ADDRS"
signed_by_3() { # a block cut after the re-join carries node 3's cosignature
  local h
  h=$(head_field 1 height)
  [ "$h" -gt "$h0" ] &&
    "$MEDSHARD" chain show "$h" --node "${CTL[1]}" --json 2>/dev/null | grep -q '"node":3'
}
check "node 3 cosigns a block cut after it re-joined" wait_for 15 signed_by_3
check "all three nodes agree at the end" wait_for 30 same_summary 1 2 3
if grep -q "Cosign of block [0-9]* by node 3: signature does not verify" "$WORK"/n[12].log; then
  bad "the cluster refused node 3's cosignatures (new key under an old id)"
fi
for i in 1 2 3; do check "node $i is still running" node_alive "$i"; done
finish
