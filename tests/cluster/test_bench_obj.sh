#!/usr/bin/env bash
# `medshard bench put|get`, run tiny so the benchmark cannot silently rot:
# every phase succeeds (its own dev cluster of 6 nodes, 4+2: PUT, GET,
# small-object ingest, degraded GET with two data-shard nodes SIGKILLed and
# restarted, fio and loopback limits) and every figure it reports is a
# positive, finite number; `bench get` leads with the GET figures; the run
# leaves no node process or file behind, also when interrupted; bad flags
# are refused. Not a performance assertion.
# Usage: test_bench_obj.sh path/to/medshard
MEDSHARD=${1:?usage: test_bench_obj.sh MEDSHARD}
MEDSHARD=$(cd "$(dirname "$MEDSHARD")" && pwd)/$(basename "$MEDSHARD")
. "$(dirname "$0")/lib.sh"
unset MEDSHARD_NODE
cd "$WORK" || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
# The bench makes its temp dir under $TMPDIR: here, inside $WORK.
export TMPDIR=$WORK

# Whatever happens, no node of ours outlives the test.
teardown() {
  for d in "$WORK"/medshard-bench-obj-*/dev; do
    [ -d "$d" ] && "$MEDSHARD" dev down --dir "$d" >/dev/null 2>&1
  done
  cleanup
}
trap teardown EXIT

# leftovers: our node processes still running, and bench temp dirs.
leftovers() {
  local procs dirs
  procs=$(pgrep -f "medshard node .*--dir $WORK/" | wc -l)
  dirs=$(find "$WORK" -maxdepth 1 -name 'medshard-bench-obj-*' | wc -l)
  echo "$procs processes, $dirs dirs"
}

if ! command -v fio >/dev/null; then
  echo "SKIP: fio is not installed (scripts/bootstrap installs it)"
  exit 77
fi

# 1. The command the issue names, as JSON.
"$MEDSHARD" bench put --size 8MiB --small-count 20 --nodes 6 --json >"$WORK/put.json" 2>"$WORK/put.err"
rc=$?
if [ "$rc" = 0 ]; then ok "bench put --size 8MiB --small-count 20 --nodes 6 exits 0"; else
  bad "bench put exited $rc"; tail -n 40 "$WORK/put.err" | sed 's/^/    | /'; fi
"$PY" - "$WORK/put.json" <<'EOF' >"$WORK/check.out" 2>&1
import json, math, sys
d = json.load(open(sys.argv[1]))
bad = []
def pos(path, v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        bad.append("%s = %r" % (path, v))
for phase in ("put", "get", "degraded_get"):
    p = d.get(phase)
    if p is None:
        bad.append(phase + " missing"); continue
    if p["ok"] is not True: bad.append(phase + " not ok")
    for k in ("best_mbps", "median_mbps", "ratio", "ratio_median"): pos(phase + "." + k, p[k])
    if len(p["runs_s"]) != d["runs"]: bad.append(phase + ": %d runs" % len(p["runs_s"]))
    for s in p["runs_s"]: pos(phase + ".runs_s", s)
    c = p["cpu"]  # /proc clock ticks: a tiny run may round a client's share to 0
    pos(phase + ".cpu.bytes", c["bytes"]); pos(phase + ".cpu.nodes_s", c["nodes_s"])
    pos(phase + ".cpu.ceiling_mbps", c["ceiling_mbps"]); pos(phase + ".cpu.wall_s", c["wall_s"])
    if not 0 <= c["others_s"] < 1e6: bad.append(phase + ".cpu.others_s %r" % c["others_s"])
    if not (0 <= c["client_s"] < 1e6 and 0 < c["busiest_node_s"] <= c["nodes_s"]): bad.append(phase + ".cpu %r" % c)
for k in ("aim", "aim_met"):
    if k not in d["put"] or k not in d["get"]: bad.append("aim missing")
if len(d["killed"]) != 2 or d["degraded_skipped"] is not None: bad.append("killed %r" % d["killed"])
s = d["small"]
if s is None or s["ok"] is not True or s["done"] != 20 or s["failed"] != 0: bad.append("small %r" % s)
else:
    for k in ("seconds", "objects_per_s", "mbps", "p50_ms", "p99_ms", "ratio_to_put_limit"): pos("small." + k, s[k])
l = d["limits"]
for k in ("fio_write_mbps", "fio_write_client_mbps", "fio_read_mbps", "loopback_mbps", "put_limit_mbps", "get_limit_mbps"):
    pos("limits." + k, l[k])
if len(l["passes"]) != 2: bad.append("limit passes %d" % len(l["passes"]))
for p in l["passes"]:
    for k in ("fio_write_mbps", "fio_read_mbps", "loopback_mbps"): pos("pass." + k, p[k])
pos("generator_gbps", d["generator_gbps"]); pos("up_s", d["up_s"]); pos("cpus", d["cpus"])
if (d["k"], d["m"], d["nodes"], d["size"]) != (4, 2, 6, 8 << 20): bad.append("shape %r" % ((d["k"], d["m"], d["nodes"], d["size"]),))
print("\n".join(bad) if bad else "all figures positive and finite")
sys.exit(1 if bad else 0)
EOF
if [ $? = 0 ]; then ok "every phase ok, every figure positive and finite, 2 nodes killed"; else
  bad "bench put --json figures"; sed 's/^/    | /' "$WORK/check.out"; head -c 3000 "$WORK/put.json"; echo; fi
check "bench put left no node or temp dir ($(leftovers))" [ "$(leftovers)" = "0 processes, 0 dirs" ]

# 2. `bench get`, text: GET leads, aims are judged, quick settings.
"$MEDSHARD" bench get --size 1MiB --runs 1 --small-count 4 --clients 2 --limit-size 16MiB \
  >"$WORK/get.out" 2>"$WORK/get.err"
rc=$?
first=$(sed -n 2p "$WORK/get.out" | awk '{print $1}')
if [ "$rc" = 0 ] && [ "$first" = GET ] && grep -q 'GET / min(fio read, loopback) .*aim >= 0.70' "$WORK/get.out" &&
   grep -q '^degraded GET .* MB/s best' "$WORK/get.out"; then
  ok "bench get exits 0 and leads with GET"; else
  bad "bench get (exit $rc, first figure '$first')"; sed 's/^/    | /' "$WORK/get.out"; tail -n 20 "$WORK/get.err"; fi
check "bench get left no node or temp dir ($(leftovers))" [ "$(leftovers)" = "0 processes, 0 dirs" ]

# 3. Ctrl-C mid-PUT: SIGINT to the whole process group, as a terminal
# sends it; the guard process stops the cluster and removes the files.
set -m # job control: the bench gets its own process group, SIGINT not ignored
"$MEDSHARD" bench put --size 16GiB --small-count 0 --limit-size 16MiB >/dev/null 2>"$WORK/int.err" &
BP=$!
set +m
if wait_for 60 grep -q 'PUT 1/' "$WORK/int.err"; then kill -INT -- "-$BP"; fi
wait "$BP"
rc=$?
gone() { [ "$(leftovers)" = "0 processes, 0 dirs" ]; }
if [ "$rc" = 130 ] && wait_for 60 gone && grep -q interrupted "$WORK/int.err"; then
  ok "SIGINT mid-PUT: nodes stopped, files removed"; else
  bad "SIGINT mid-PUT (exit $rc; $(leftovers))"; sed 's/^/    | /' "$WORK/int.err"; fi

# 4. Bad flags.
"$MEDSHARD" bench put --node 127.0.0.1:1 --nodes 3 >/dev/null 2>"$WORK/err"
check "--node with --nodes is refused (exit 2)" [ $? = 2 ]
"$MEDSHARD" bench get --ec 4+2 --nodes 5 >/dev/null 2>"$WORK/err"
check "--ec 4+2 on 5 nodes is refused (exit 2)" [ $? = 2 ]
grep -q 'at least K+M' "$WORK/err" || bad "the --ec refusal says why: $(cat "$WORK/err")"
finish
