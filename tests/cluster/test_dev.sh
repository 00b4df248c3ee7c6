#!/usr/bin/env bash
# `medshard dev`: the local dev cluster. In a temp working dir: `dev up`
# with 4 nodes (3 voters, 1 standby) and 2+1; other verbs find the cluster
# through ./medshard.conf with no --node; `dev status` shows every node and
# one leader; a SIGKILLed voter (`dev kill`) shows as down while the chain
# keeps serving, and after `dev start` it catches up to the same head (so
# does the standby); bad input gets a clear error and changes nothing;
# `dev down` leaves no node process and `--wipe` removes the files.
# Usage: test_dev.sh path/to/medshard
MEDSHARD=${1:?usage: test_dev.sh MEDSHARD}
MEDSHARD=$(cd "$(dirname "$MEDSHARD")" && pwd)/$(basename "$MEDSHARD")
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/devlib.sh"

dev() { "$MEDSHARD" dev "$@"; }

# stp PYTHON: runs the statements PYTHON with d = `dev status --json`.
stp() {
  dev status --dir "$D" --json 2>/dev/null |
    "$PY" -c "import json,sys; d=json.load(sys.stdin); $1" 2>/dev/null
}
# A PID is gone when none of its threads is alive (a zombie main thread
# can outlive threads that still hold the process's files).
pid_gone() {
  local t
  for t in /proc/"$1"/task/*/stat; do
    [ -r "$t" ] || continue
    case $(sed 's/.*) //' "$t" 2>/dev/null | cut -c1) in Z | X | "") ;; *) return 1 ;; esac
  done
}

# ---- up ----
expect "dev up --nodes 4 --voters 3 --ec 2+1 prints the default bucket" 0 \
  'bucket +default \(2\+1\)' dev up --nodes 4 --voters 3 --ec 2+1 --dir D
cp "$WORK/out" "$WORK/up.out"
check "dev up says where the logs are" grep -q "logs .*$D/n\*.log" "$WORK/up.out"
state_private() {
  [ "$(head -1 "$D/cluster.ini")" = 'medshard-dev 1' ] &&
    [ "$(stat -c %a "$D/cluster.ini" "$D/secret" | sort -u)" = 600 ]
}
check "the state file is version 1, it and the secret file 0600" state_private
nodes=$(sed -n 's/^nodes = //p' medshard.conf)
conf_ok() {
  [ "$(head -1 medshard.conf)" = 'medshard-client 1' ] &&
    [ "$(echo "$nodes" | tr ',' '\n' | grep -c '^127\.0\.0\.1:[0-9]*$')" = 4 ]
}
check "./medshard.conf lists the 4 control addresses" conf_ok

# ---- other verbs find the cluster with no --node ----
expect "chain head --json with no --node finds the cluster" 0 '"raft_state":"(leader|follower)"' \
  "$MEDSHARD" chain head --json
expect "bucket create with no --node" 0 'bucket xray created' "$MEDSHARD" bucket create xray --ec 2+1
expect "the default bucket exists" 1 'bucket default already exists' \
  "$MEDSHARD" bucket create default --ec 2+1
expect "MEDSHARD_NODE wins over ./medshard.conf" 1 'cannot reach the cluster at 127.0.0.1:1' \
  env MEDSHARD_NODE=127.0.0.1:1 "$MEDSHARD" chain head
expect "--node wins over ./medshard.conf" 1 'cannot reach the cluster at 127.0.0.1:1' \
  "$MEDSHARD" chain head --node 127.0.0.1:1
mkdir -p "$WORK/elsewhere"
expect "no config elsewhere: a clear error" 2 \
  'no cluster: pass --node.*run `medshard dev up` here' \
  bash -c "cd '$WORK/elsewhere' && '$MEDSHARD' chain head"

# ---- status ----
all_alive() { [ "$(stp 'print(sum(n["alive"] and n["reachable"] for n in d["nodes"]))')" = 4 ]; }
one_leader() {
  stp 'ls = {n["leader"] for n in d["nodes"]}
lead = [n["id"] for n in d["nodes"] if n["raft_state"] == "leader"]
print("yes" if len(lead) == 1 and ls == set(lead) else "no")' | grep -qx yes
}
check "dev status --json: 4 nodes alive" all_alive
check "dev status --json: exactly one leader, and every node names it" wait_for 10 one_leader
roles() { [ "$(stp 'print(sorted(n["role"] for n in d["nodes"]))')" = "['standby', 'voter', 'voter', 'voter']" ]; }
check "dev status --json: 3 voters and 1 standby" roles
data_ports_listen() {
  stp 'import socket
for n in d["nodes"]:
    h, p = n["data"].rsplit(":", 1)
    socket.create_connection((h, int(p)), timeout=2).close()
print("yes")' | grep -qx yes
}
check "every node's data port (dev status --json) accepts connections" data_ports_listen
expect "dev status (human) without --dir finds the dir through medshard.conf" 0 \
  '^4 +standby +[0-9]+ +running' dev status

# ---- kill a voter: the chain keeps serving ----
pid1=$(stp 'print([n["pid"] for n in d["nodes"] if n["id"] == 1][0])')
expect "dev kill 1" 0 "node 1 \\(pid $pid1\\) killed with SIGKILL" dev kill 1 --dir D
check "node 1's process is gone" pid_gone "$pid1"
one_down() {
  [ "$(stp 'print([(n["id"], n["alive"], n["raft_state"]) for n in d["nodes"] if not n["reachable"]],
      sum(n["alive"] for n in d["nodes"]))')" = "[(1, False, 'down')] 3" ]
}
check "dev status shows node 1 down and the other 3 alive" one_down
leader_left() { [ "$(stp 'print(sum(n["raft_state"] == "leader" for n in d["nodes"]))')" = 1 ]; }
check "a leader among the 3 that are left" wait_for 30 leader_left
# bench anchor reads the cluster map from the first address of --node only,
# so node 1's address goes last.
check "the chain still serves: 300 anchors acknowledged with node 1 down" \
  "$MEDSHARD" bench anchor --node "${nodes#*,},${nodes%%,*}" --bucket default --count 300 \
  --clients 2 --batch 20 --acks "$WORK/acks"
check "bucket create with node 1 down" "$MEDSHARD" bucket create yankee --ec 2+1

# ---- start it again: it catches up ----
expect "dev start 1" 0 'node 1 started \(pid [0-9]+\)' dev start 1
# same_head: every node alive, no alarm, one (head, height, sealed) for
# all, at least one block, every block sealed.
same_head() {
  stp 'h = {(n["head"], n["height"], n["sealed"]) for n in d["nodes"]}
head, height, sealed = list(h)[0]
ok = len(h) == 1 and height > 0 and height == sealed
ok = ok and all(n["alive"] and not n["alarm"] for n in d["nodes"])
print("yes" if ok else "no")' | grep -qx yes
}
check "node 1 catches up: same head and height as the others, all sealed" wait_for 30 same_head
ctl1=$(stp 'print(d["nodes"][0]["control"])')
check "node 1 holds every anchor acknowledged while it was down" \
  "$MEDSHARD" bench anchor --node "$ctl1" --check "$WORK/acks"

# ---- the standby too (it restarts with --join) ----
expect "dev kill 4 (the standby)" 0 'node 4 .* killed' dev kill 4
expect "dev start 4 --json" 0 '"ok":true,"node":4' dev start 4 --json
check "node 4 catches up as well" wait_for 30 same_head

# ---- bad input: a clear error, nothing changed ----
cp "$D/cluster.ini" "$WORK/state.before"
expect "dev kill 9: no such node" 1 'no node 9 in the dev cluster' dev kill 9
expect "dev kill x: not a node id" 2 "want a node id .*got 'x'" dev kill x
expect "dev kill with no id" 2 'which node' dev kill
expect "dev start on a running node" 1 'node 2 is already running' dev start 2
expect "dev up twice" 1 'is running \(4 of 4 nodes' dev up --nodes 4 --voters 3 --ec 2+1 --dir D
expect "dev status --nodes: not a status option" 2 '--nodes does not apply' dev status --nodes 3
expect "dev frob: unknown subcommand" 2 "unknown subcommand 'frob'" dev frob
check "the state file is unchanged by the refused commands" cmp -s "$D/cluster.ini" "$WORK/state.before"
check "all 4 nodes still alive" all_alive
expect "dev status in a dir without a cluster" 1 'no dev cluster in .*nowhere' dev status --dir "$WORK/nowhere"
check "... and it created nothing there" bash -c "[ ! -e '$WORK/nowhere' ]"
expect "dev up --voters 2" 2 '--voters must be 1, 3 or 5' dev up --voters 2 --dir "$WORK/U"
expect "dev up --nodes 2 --voters 3" 2 '--voters 3 needs at least 3 nodes' dev up --nodes 2 --dir "$WORK/U"
expect "dev up --nodes 4 --ec 4+2" 2 'needs --nodes 6 or more; --nodes is 4' dev up --nodes 4 --dir "$WORK/U"
expect "dev up --nodes 33" 2 '--nodes wants 1..32' dev up --nodes 33 --dir "$WORK/U"
expect "dev up --ec 2+x" 2 "--ec must look like K\\+M" dev up --ec 2+x --dir "$WORK/U"
touch "$WORK/afile"
expect "dev up --dir under a file" 1 'cannot use .*afile/x as the dev dir' dev up --dir "$WORK/afile/x"
check "no refused dev up left a dir behind" bash -c "[ ! -e '$WORK/U' ]"

# ---- down ----
pids=$(stp 'print(" ".join(str(n["pid"]) for n in d["nodes"]))')
expect "dev down stops all 4 nodes" 0 'stopped nodes 1 2 3 4' dev down --dir D
all_gone() { local p; for p in $pids; do pid_gone "$p" || return 1; done; }
check "no node PID remains ($pids)" all_gone
no_node_procs() { ! pgrep -f -- "node .*--dir $D/n" >/dev/null; }
check "no medshard node process runs on $D" no_node_procs
check "the state file records every node stopped" \
  bash -c "[ \"\$(grep -c '^pid = 0$' '$D/cluster.ini')\" = 4 ]"
expect "dev kill on a stopped node" 1 'node 3 is not running' dev kill 3
expect "dev down again: nothing to stop" 0 'was running' dev down
expect "dev down --wipe --json" 0 '"wiped":true' dev down --wipe --json
check "--wipe removed the dev dir and ./medshard.conf" bash -c "[ ! -e '$D' ] && [ ! -e medshard.conf ]"
finish
