# Shared helpers for the multi-process cluster tests: free loopback ports,
# starting `medshard node` processes in a temp dir, stopping them by PID,
# and bounded waits. Source it; set MEDSHARD to the binary first.
set -u
T0=$(date +%s)
PASS=0
FAIL=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/medshard-cluster-XXXXXX")
declare -A PID

ok()   { PASS=$((PASS + 1)); echo "PASS: $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

# A free TCP port on 127.0.0.1 (bound, then released).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# cluster_init N: ports and peer list for N voters.
cluster_init() {
  NODES=$1
  PEERS=()
  ADDRS=""
  SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  for i in $(seq 1 "$NODES"); do
    RAFT[$i]=127.0.0.1:$(free_port)
    CTL[$i]=127.0.0.1:$(free_port)
    PEERS+=(--peer "$i,${RAFT[$i]},${CTL[$i]}")
    ADDRS="${ADDRS:+$ADDRS,}${CTL[$i]}"
  done
}

# start_node I: node I in the background, log in $WORK/nI.log. NODE_CONFIG
# (optional) names an INI file read before the flags (for keys that have
# no flag, e.g. snapshot_threshold).
start_node() {
  local i=$1
  "$MEDSHARD" node ${NODE_CONFIG:+--config "$NODE_CONFIG"} --id "$i" --dir "$WORK/n$i" \
    --raft "${RAFT[$i]}" --control "${CTL[$i]}" \
    --secret "$SECRET" "${PEERS[@]}" --cut-ms "${CUT_MS:-100}" \
    >>"$WORK/n$i.log" 2>&1 &
  PID[$i]=$!
}

# node_alive I: node I's process is still running. If it is not, prints
# how it ended (exit 141 = SIGPIPE, 134 = abort, 139 = SIGSEGV).
node_alive() {
  local i=$1 p=${PID[$1]:-}
  [ -n "$p" ] || { echo "node $i is not running (not started or stopped)"; return 1; }
  kill -0 "$p" 2>/dev/null && return 0
  wait "$p" 2>/dev/null
  echo "node $i (pid $p) died: exit status $?"
  PID[$i]=""
  return 1
}

stop_node() { # SIGTERM, then SIGKILL after 10 s
  local i=$1 p=${PID[$i]:-}
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  PID[$i]=""
}

kill_node() { local i=$1; kill -KILL "${PID[$i]}" 2>/dev/null; wait "${PID[$i]}" 2>/dev/null; PID[$i]=""; }

cleanup() {
  for i in "${!PID[@]}"; do stop_node "$i"; done
  if [ "$FAIL" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

# head_field NODE FIELD: one field of `chain head --json` on node NODE.
head_json() { "$MEDSHARD" chain head --node "${CTL[$1]}" --json 2>/dev/null; }
head_field() { head_json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])" 2>/dev/null; }

# wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
  local deadline=$(( $(date +%s) + $1 )); shift
  while [ "$(date +%s)" -lt "$deadline" ]; do "$@" && return 0; sleep 0.2; done
  return 1
}

leader_of() { # prints the id of the leader as node $1 sees it
  head_field "$1" leader
}

finish() {
  echo "$PASS passed, $FAIL failed ($(( $(date +%s) - T0 )) s)"
  [ "$FAIL" -eq 0 ]
}
