#!/usr/bin/env bash
# The data plane inside real `medshard node` processes (docs/dataplane.md):
# a node started with --data serves shard RPCs on its data port from
# DIR/store; a shard written there survives a node restart; garbage on the
# data port closes only that connection. Usage: test_dataplane.sh MEDSHARD
MEDSHARD=${1:?usage: test_dataplane.sh MEDSHARD}
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
# Debian's python3 (with python3-xxhash from scripts/bootstrap), not
# whatever python3 comes first in PATH.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

cluster_init 1
DATA=127.0.0.1:$(free_port)
start_dp() {
  "$MEDSHARD" node --id 1 --dir "$WORK/n1" --raft "${RAFT[1]}" --control "${CTL[1]}" \
    --secret "$SECRET" "${PEERS[@]}" --data "$DATA" >>"$WORK/n1.log" 2>&1 &
  PID[1]=$!
}
start_dp
serving() { "$PY" "$HERE/data_raw.py" "$DATA" stat >/dev/null 2>&1; }
check "the node serves its data port" wait_for 30 serving
check "a shard store was created in the node's dir" test -d "$WORK/n1/store/seg"
out=$("$PY" "$HERE/data_raw.py" "$DATA" stat)
check "STAT of an unknown shard: MSD_ENOSHARD ($out)" grep -q "code=MSD_ENOSHARD" <<<"$out"
out=$("$PY" "$HERE/data_raw.py" "$DATA" put 3000000)
check "a 3 MB shard written in appends and sealed ($out)" grep -q "^sealed size=3000000" <<<"$out"
out=$("$PY" "$HERE/data_raw.py" "$DATA" get 3000000)
check "it reads back byte for byte ($out)" grep -q "^match" <<<"$out"
out=$("$PY" "$HERE/data_raw.py" "$DATA" garbage)
check "garbage closes that connection ($out)" grep -q "closed" <<<"$out"
check "the node logged it" grep -q "net: connection .* closed: bad magic" "$WORK/n1.log"
check "and still serves" serving
stop_node 1
start_dp
check "after a restart the node serves again" wait_for 30 serving
out=$("$PY" "$HERE/data_raw.py" "$DATA" get 3000000)
check "the shard survived the restart ($out)" grep -q "^match" <<<"$out"
check "the node is still running" node_alive 1
finish
