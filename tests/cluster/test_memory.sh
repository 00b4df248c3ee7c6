#!/usr/bin/env bash
# Memory stays bounded whatever the object size (docs/dataplane.md
# "Memory"): on a 6-node dev cluster (4+2), a 4 GiB object streams in
# through `put -` from a generator (so no 4 GiB file is written) and back
# out through `get ... -` into sha256sum, while every node's VmRSS (and the
# client's) is sampled every 100 ms. Every peak must stay under 256 MiB.
# Not registered under the sanitizers: ASan's shadow memory and quarantine
# inflate RSS by design. MSD_MEM_SIZE (bytes, default 4 GiB) and
# MSD_MEM_LIMIT_MIB (default 256) change the figures.
# Usage: test_memory.sh path/to/medshard
MEDSHARD=${1:?usage: test_memory.sh MEDSHARD}
MEDSHARD=$(cd "$(dirname "$MEDSHARD")" && pwd)/$(basename "$MEDSHARD")
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/devlib.sh"
SIZE=${MSD_MEM_SIZE:-$((4 << 30))}
LIMIT=${MSD_MEM_LIMIT_MIB:-256}

SAMPLER=
on_teardown() { [ -n "$SAMPLER" ] && kill -TERM "$SAMPLER" 2>/dev/null; }

if ! timeout 120 "$MEDSHARD" dev up --nodes 6 --voters 3 --ec 4+2 --dir D >"$WORK/up.out" 2>&1; then
  bad "dev up --nodes 6 --voters 3 --ec 4+2"; sed 's/^/    | /' "$WORK/up.out"; finish; exit
fi
ok "dev up: 6 nodes, 4+2"
# The put goes through node 1 and the get through node 2 (a single --node
# pins the coordinator), so both coordinator roles are sampled.
PUT_NODE=$(ini 1 control)
GET_NODE=$(ini 2 control)

# The sampler: every 100 ms, VmRSS of each node (PIDs from the state file)
# and of any `medshard put|get` running in WORK (the client); on SIGTERM it
# writes "name peak_kib samples" lines to peaks.txt.
cat >"$WORK/sampler.py" <<'EOF'
import os, re, signal, sys, time
state, work, exe, out = sys.argv[1:5]
nodes = {}
node = None
for line in open(state):
    m = re.match(r"\[node (\d+)\]", line)
    if m:
        node = int(m.group(1))
    m = re.match(r"pid = (\d+)", line)
    if m and node:
        nodes[int(m.group(1))] = "node %d" % node
peak, samples, stop = {}, {}, False

def rss(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None

def clients():
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = open("/proc/%s/cmdline" % d, "rb").read().split(b"\0")
            if (argv[0].decode() == exe and len(argv) > 1 and argv[1] in (b"put", b"get")
                    and os.readlink("/proc/%s/cwd" % d) == work):
                yield int(d), "client " + argv[1].decode()
        except (OSError, UnicodeDecodeError):
            continue

def finish(*_):
    global stop
    stop = True

signal.signal(signal.SIGTERM, finish)
while not stop:
    for pid, name in list(nodes.items()) + list(clients()):
        kib = rss(pid)
        if kib is not None:
            peak[name] = max(peak.get(name, 0), kib)
            samples[name] = samples.get(name, 0) + 1
    time.sleep(0.1)
with open(out + ".tmp", "w") as f:
    for name in sorted(peak):
        f.write("%s %d %d\n" % (name.replace(" ", "_"), peak[name], samples[name]))
os.rename(out + ".tmp", out)
EOF
"$PY" "$WORK/sampler.py" "$D/cluster.ini" "$WORK" "$MEDSHARD" "$WORK/peaks.txt" &
SAMPLER=$!

# PUT: generator -> tee (SHA-256 of what was sent, through a FIFO) -> put -.
mkfifo "$WORK/fifo"
sha256sum <"$WORK/fifo" | cut -c1-64 >"$WORK/src.sha" &
shapid=$!
t=$(now)
(set -o pipefail
 "$SCRIPTS/gen-fastq" - --size "$SIZE" --seed 4 2>/dev/null | tee "$WORK/fifo" |
   timeout -k 5 1800 "$MEDSHARD" put - default/memory/big --json --node "$PUT_NODE" >"$WORK/put.json" 2>"$WORK/put.err")
rc=$?
wait "$shapid"
put_s=$(since "$t")
if [ "$rc" = 0 ]; then ok "put - of $SIZE bytes streamed from gen-fastq (${put_s} s)"; else
  bad "put - of $SIZE bytes (exit $rc)"; sed 's/^/    | /' "$WORK/put.err"; fi
want=$(cat "$WORK/src.sha")
check "put --json reports the SHA-256 of what was sent" \
  test "$("$PY" -c "import json; print(json.load(open('$WORK/put.json'))['sha256'])" 2>/dev/null)" = "$want"

# GET: get - -> sha256sum; nothing touches the disk.
t=$(now)
got=$(set -o pipefail; timeout -k 5 1800 "$MEDSHARD" get default/memory/big - --node "$GET_NODE" 2>"$WORK/get.err" |
  sha256sum | cut -c1-64)
rc=$?
get_s=$(since "$t")
if [ "$rc" = 0 ] && [ "$got" = "$want" ]; then ok "get - of $SIZE bytes is byte-identical (${get_s} s)"; else
  bad "get - (exit $rc, sha256 $got, wanted $want)"; sed 's/^/    | /' "$WORK/get.err"; fi

kill -TERM "$SAMPLER"
for _ in $(seq 1 50); do [ -e "$WORK/peaks.txt" ] && break; sleep 0.1; done
wait "$SAMPLER" 2>/dev/null
SAMPLER=
echo "peak VmRSS (sampled every 100 ms; put ${put_s} s, get ${get_s} s):"
while read -r name kib n; do
  mib=$(( (kib + 1023) / 1024 ))
  role=
  [ "$name" = node_1 ] && role=", coordinated the put"
  [ "$name" = node_2 ] && role=", coordinated the get"
  printf '  %-12s %5d MiB (%d samples%s)\n' "${name//_/ }" "$mib" "$n" "$role"
  check "${name//_/ }: peak RSS $mib MiB < $LIMIT MiB" test "$mib" -lt "$LIMIT"
done <"$WORK/peaks.txt"
check "every node was sampled" test "$(grep -c '^node_' "$WORK/peaks.txt")" = 6
check "the clients were sampled" bash -c "grep -q '^client_put' '$WORK/peaks.txt' && grep -q '^client_get' '$WORK/peaks.txt'"
finish
