# Helpers for the tests that run a `medshard dev` cluster (objects, sweep,
# memory): source it after lib.sh, with MEDSHARD set. It sets HERE,
# SCRIPTS, PY and D (the dev dir, inside WORK), moves into WORK, and
# installs a teardown that never lets a node outlive the test.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPTS=$(cd "$HERE/../../scripts" && pwd)
# Debian's python3 (python3-xxhash from scripts/bootstrap), not whatever
# python3 comes first in PATH.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
export MSD_TOOL_CACHE=${MSD_TOOL_CACHE:-$WORK/toolcache}
unset MEDSHARD_NODE
cd "$WORK" || exit 1
D=$WORK/D

# Node PIDs seen in the state file (remember_pids), so teardown can stop
# them even if the state file is gone; a PID is killed only while its
# command line still names this test's dev dir.
DEV_PIDS=""
remember_pids() { DEV_PIDS="$DEV_PIDS $(sed -n 's/^pid = \([1-9][0-9]*\)$/\1/p' "$D/cluster.ini" 2>/dev/null)"; }

# dev_teardown: `dev down`, then SIGKILL every PID the state file (or
# remember_pids) still knows; on failure, the last lines of each node log.
# A test with more to stop defines on_teardown.
dev_teardown() {
  declare -F on_teardown >/dev/null && on_teardown
  "$MEDSHARD" dev down --dir "$D" >/dev/null 2>&1
  for p in $(sed -n 's/^pid = \([1-9][0-9]*\)$/\1/p' "$D/cluster.ini" 2>/dev/null); do
    kill -KILL "$p" 2>/dev/null
  done
  for p in $DEV_PIDS; do
    { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "--dir $D/n" && kill -KILL "$p"
  done
  [ "$FAIL" -eq 0 ] || for f in "$D"/n*.log; do
    echo "== last lines of $f"; grep -v 'pass done' "$f" | tail -n 15
  done
  cleanup
}
trap dev_teardown EXIT

# ms ARGS...: medshard, never waiting more than TMO seconds (default 180).
ms() { timeout -k 5 "${TMO:-180}" "$MEDSHARD" "$@"; }
# expect NAME EXIT_CODE PATTERN CMD...: exit code and a line of its output.
expect() {
  local name=$1 want=$2 pattern=$3 rc
  shift 3
  "$@" >"$WORK/out" 2>&1
  rc=$?
  if [ "$rc" = "$want" ] && grep -Eq -- "$pattern" "$WORK/out"; then ok "$name"; else
    bad "$name (exit $rc, wanted $want; pattern '$pattern')"; sed 's/^/    | /' "$WORK/out" | head -20; fi
}
# js FILE EXPR: prints the Python expression EXPR over d = the JSON in FILE.
js() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null; }
# st EXPR: the same over d = `dev status --json`.
st() {
  "$MEDSHARD" dev status --dir "$D" --json 2>/dev/null |
    "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null
}
# ini NODE KEY: a key of node NODE's section of the state file.
ini() { awk -v n="[node $1]" -v k="$2" '$0 == n { s = 1; next } /^\[/ { s = 0 } s && $1 == k { print $3 }' "$D/cluster.ini"; }
now() { date +%s.%N; }
# since START: seconds since START (a `now`), one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# healthy [N]: all N (default 6) nodes run and answer, and agree on one leader.
healthy() {
  [ "$(st "sum(n['alive'] and n['reachable'] for n in d['nodes']) == ${1:-6} and
len({n['leader'] for n in d['nodes']}) == 1 and
sum(n['raft_state'] == 'leader' for n in d['nodes']) == 1")" = True ]
}
