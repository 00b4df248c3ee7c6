#!/usr/bin/env bash
# Objects end to end on a 6-node dev cluster (3 voters, 4+2): `put`/`get`
# round-trip byte for byte at sizes 0 B .. 1 GiB; `put --json` reports the
# object truthfully; any 2 nodes down still read everything (whole and 500
# seeded range reads), a 3rd down fails loudly and leaves no file; a flipped
# byte in a stored shard is decoded around and logged; a SIGKILLed
# coordinator mid-PUT leaves nothing visible and a retry succeeds; a
# SIGKILLed target mid-PUT leaves a hole; bad frames on the data port and
# bad CLI input get clear errors and store nothing.
# MSD_TEST_BIG=0 shrinks the 1 GiB objects to 256 MiB (the sanitizer run).
# Usage: test_objects.sh path/to/medshard
MEDSHARD=${1:?usage: test_objects.sh MEDSHARD}
MEDSHARD=$(cd "$(dirname "$MEDSHARD")" && pwd)/$(basename "$MEDSHARD")
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/devlib.sh"
MIB=$((1 << 20))
BIG=$((1 << 30))
[ "${MSD_TEST_BIG:-1}" = 0 ] && BIG=$((256 * MIB))
RANGES=${MSD_TEST_RANGES:-500}

sha() { sha256sum "$1" | cut -c1-64; }
T_SECTION=$(now)
section() { echo "== $* (at $(since "$T0") s)"; T_SECTION=$(now); }
# stat_to KEY FILE: `stat --json` of default/KEY into FILE.
stat_to() { ms stat "default/$1" --json >"$2" 2>"$WORK/stat.err"; }
# shard_node KEY INDEX: the node holding shard INDEX of default/KEY.
shard_node() {
  stat_to "$1" "$WORK/stat.json" &&
    js "$WORK/stat.json" "[s['node'] for s in d['shards'] if s['index'] == $2][0]"
}
# not_found KEY: `stat` says default/KEY does not exist (and exits 1).
not_found() {
  ms stat "default/$1" --json >"$WORK/nf.out" 2>&1
  local rc=$?
  [ "$rc" = 1 ] && grep -qi 'not found\|no such\|does not exist' "$WORK/nf.out"
}
# not_listed PREFIX: `ls` of the default bucket names no key under PREFIX.
not_listed() {
  ms ls default >"$WORK/ls.out" 2>&1 || return 1
  ! grep -q -- "$1" "$WORK/ls.out"
}

declare -A SHA SIZE   # per key: what was stored
KEYS=()               # keys that every node-loss check reads back

# put_check NAME SRC KEY [SIZE SHA]: `put --json SRC default/KEY` (SRC may be
# -, reading stdin); the JSON must name the object and carry its size and
# the SHA-256 of SRC (given as SIZE and SHA when SRC is a stream), an object
# id, a version, an anchor and no holes.
put_check() {
  local name=$1 src=$2 key=$3 size=${4:-} want=${5:-} t rc
  if [ -z "$size" ]; then size=$(stat -c %s "$src"); want=$(sha "$src"); fi
  t=$(now)
  ms put "$src" "default/$key" --json >"$WORK/put.json" 2>"$WORK/put.err"
  rc=$?
  echo "  put $key ($size bytes): $(since "$t") s"
  if [ "$rc" != 0 ]; then
    bad "$name: put exited $rc"; sed 's/^/    | /' "$WORK/put.err" | head -10; return 1
  fi
  local v
  v=$(js "$WORK/put.json" "d['bucket'] == 'default' and d['key'] == '$key' and
d['size'] == $size and d['sha256'] == '$want' and d['version'] >= 1 and
len(d['object_id']) == 32 and int(d['object_id'], 16) >= 0 and
isinstance(d['anchor']['leaf_index'], int) and len(d['anchor']['leaf_hash']) == 64 and
d['holes'] == []")
  if [ "$v" = True ]; then ok "$name: put --json names default/$key, size $size, its SHA-256, an anchor, no holes"
  else bad "$name: put --json fields (wanted size $size sha256 $want)"; sed 's/^/    | /' "$WORK/put.json"; return 1; fi
  SHA[$key]=$want
  SIZE[$key]=$size
  KEYS+=("$key")
}

# get_check NAME KEY: `get default/KEY` to a file (objects up to 64 MiB) or
# to stdout through sha256sum (bigger ones); the bytes must hash as put.
get_check() {
  local name=$1 key=$2 t rc got
  t=$(now)
  if [ "${SIZE[$key]}" -le $((64 * MIB)) ]; then
    rm -f "$WORK/got"
    ms get "default/$key" "$WORK/got" 2>"$WORK/get.err"
    rc=$?
    got=$( [ -f "$WORK/got" ] && sha "$WORK/got")
    rm -f "$WORK/got"
  else
    got=$(set -o pipefail; ms get "default/$key" - 2>"$WORK/get.err" | sha256sum | cut -c1-64)
    rc=$?
  fi
  if [ "$rc" = 0 ] && [ "$got" = "${SHA[$key]}" ]; then
    ok "$name: get $key (${SIZE[$key]} bytes) is byte-identical ($(since "$t") s)"
  else
    bad "$name: get $key (exit $rc, sha256 ${got:-none}, wanted ${SHA[$key]})"
    sed 's/^/    | /' "$WORK/get.err" | head -10
  fi
}

# Helpers in Python, written to WORK: seeded range reads and raw frames.
cat >"$WORK/ranges.py" <<'EOF'
"""ranges.py MEDSHARD KEY SRC COUNT SEED: COUNT seeded `get --range` reads of
KEY compared with SRC's bytes; prints one line per mismatch and a summary,
exits 1 on any mismatch or failed get."""
import os, random, subprocess, sys, time
ms, key, src, count, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
UNIT, K = 1 << 20, 4
STRIPE = UNIT * K
data = open(src, "rb").read()
size = len(data)
rnd = random.Random(seed)

def pick(i):
    """(start, end or None for 'START-', kind): a mix of range shapes."""
    if i == 0:
        return 0, size - 1, "whole"
    if i == 1:
        return 0, 0, "first byte"
    if i == 2:
        return size - 1, size - 1, "last byte"
    r = rnd.random()
    if r < 0.25:  # tiny, anywhere
        s = rnd.randrange(size)
        return s, s + rnd.randrange(64), "tiny"
    if r < 0.50:  # across a unit boundary inside a stripe
        b = rnd.randrange(1, size // UNIT) * UNIT
        return b - rnd.randrange(1, 65537), b + rnd.randrange(65536), "unit-crossing"
    if r < 0.70:  # across a stripe boundary, several units
        b = rnd.randrange(1, size // STRIPE) * STRIPE
        return b - rnd.randrange(1, 2 * UNIT), b + rnd.randrange(2 * UNIT), "stripe-crossing"
    if r < 0.85:  # up to or past the end
        s = size - rnd.randrange(1, 2 * UNIT)
        if rnd.random() < 0.5:
            return s, None, "to the end"
        return s, size - 1 + rnd.randrange(UNIT), "end-clipped"
    s = rnd.randrange(size)  # large
    return s, s + rnd.randrange(9 * UNIT), "large"

bad = 0
t0 = time.time()
kinds = {}
for i in range(count):
    s, e, kind = pick(i)
    kinds[kind] = kinds.get(kind, 0) + 1
    arg = "%d-" % s if e is None else "%d-%d" % (s, e)
    p = subprocess.run([ms, "get", key, "-", "--range", arg], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    want = data[s:size if e is None else min(e, size - 1) + 1]
    if p.returncode != 0 or p.stdout != want:
        bad += 1
        if bad <= 5:
            print("  range %s (%s): exit %d, %d bytes, wanted %d%s: %s" % (
                arg, kind, p.returncode, len(p.stdout), len(want),
                "" if p.returncode else " (bytes differ)",
                p.stderr.decode(errors="replace").strip()[:300]))
print("  %d ranges (%s) in %.1f s, %d wrong" % (
    count, ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items())), time.time() - t0, bad))
sys.exit(1 if bad else 0)
EOF

cat >"$WORK/obj_raw.py" <<'EOF'
"""obj_raw.py HOST:PORT CASE [BUCKET KEY]: hand-made object frames on a
node's data port (PUT, PUT_DATA, PUT_END, GET of proto/medshard.proto).
Prints what came back: the codes of the responses and whether the node
closed the connection."""
import os, random, socket, struct, sys, time
sys.path.insert(0, os.environ["HERE"])
from ctl_raw import NAMES, decode, fb, fv, one, unzigzag
from data_raw import MAGIC, frame

PUT, PUT_DATA, PUT_END, GET = 8, 9, 10, 11

def req(op, bucket="", key="", length=None, content_type=""):
    m = fv(1, 1) + fv(2, op)
    if length is not None:
        m += fv(6, length)
    if bucket:
        m += fb(8, bucket)
    if key:
        m += fb(9, key)
    if content_type:
        m += fb(10, content_type)
    if length is not None:
        m += fv(11, 1)
    return m

def replies(s, wait=3.0):
    """Responses until the connection closes, a final one, or `wait` s."""
    out, buf, closed, end = [], b"", False, time.time() + wait
    while time.time() < end:
        while len(buf) >= 24:
            mlen, plen = struct.unpack(">II", buf[16:24])
            if len(buf) < 24 + mlen + plen:
                break
            d = decode(buf[24:24 + mlen])
            buf = buf[24 + mlen + plen:]
            code = unzigzag(one(d, 2))
            out.append("%s%s" % (NAMES.get(code, code), "" if not d.get(3) else
                                 "(%s)" % one(d, 3).decode(errors="replace")))
            if code == 0 and d.get(6):
                out.append("manifest")
            if code != 0 or one(d, 8) or d.get(6):
                return out, closed
        try:
            s.settimeout(max(0.05, end - time.time()))
            b = s.recv(1 << 20)
        except socket.timeout:
            break
        except ConnectionResetError:
            b = b""
        if not b:
            closed = True
            break
        buf += b
    return out, closed

def main():
    host, port = sys.argv[1].rsplit(":", 1)
    case = sys.argv[2]
    bucket, key = (sys.argv[3:5] + ["", ""])[:2]
    s = socket.create_connection((host, int(port)), timeout=10)
    body = random.Random(5).randbytes(100000)
    if case == "put_short":      # declares 100000 bytes, sends 50000, then PUT_END
        s.sendall(frame(req(PUT, bucket, key, 100000)) + frame(req(PUT_DATA), body[:50000]) +
                  frame(req(PUT_END)))
    elif case == "put_long":     # declares 1000 bytes, sends 100000
        s.sendall(frame(req(PUT, bucket, key, 1000)) + frame(req(PUT_DATA), body) +
                  frame(req(PUT_END)))
    elif case == "put_cut":      # declares 100000, sends 50000 and half a frame, hangs up
        s.sendall(frame(req(PUT, bucket, key, 100000)) + frame(req(PUT_DATA), body[:50000]) +
                  frame(req(PUT_DATA), body[:40000])[:20000])
        s.close()
        print("sent")
        return
    elif case in ("put_frames", "put_frames_streamed"):
        # A seeded 9 MiB + 123 B body in frames of random sizes (1 B to
        # 1 MiB), so frames straddle stripe boundaries; the size declared
        # up front or not. Prints the body's SHA-256 first.
        import hashlib
        rnd = random.Random(17 if case == "put_frames" else 18)
        big = rnd.randbytes(9 * (1 << 20) + 123)
        print("sha256=%s" % hashlib.sha256(big).hexdigest())
        s.sendall(frame(req(PUT, bucket, key, len(big) if case == "put_frames" else None)))
        at = 0
        while at < len(big):
            n = min(len(big) - at, rnd.choice([1, 7, 4096, 65537, 300000, 1 << 20]))
            s.sendall(frame(req(PUT_DATA), big[at:at + n]))
            at += n
        s.sendall(frame(req(PUT_END)))
        out, closed = replies(s, wait=60.0)
        print("replies=[%s] closed=%s" % (" ".join(out), "yes" if closed else "no"))
        return
    elif case == "put_unknown_bucket":
        s.sendall(frame(req(PUT, bucket, key, 1000)) + frame(req(PUT_DATA), body[:1000]) +
                  frame(req(PUT_END)))
    elif case == "get":          # GET of a (normally unknown) key
        s.sendall(frame(req(GET, bucket, key)))
    elif case == "data_first":   # PUT_DATA with no PUT before it
        s.sendall(frame(req(PUT_DATA), body[:1000]) + frame(req(PUT_END)))
    elif case == "garbage":      # seeded random bytes
        s.sendall(random.Random(11).randbytes(4096))
    elif case == "short_header": # 10 bytes of a frame header, then hang up
        s.sendall(frame(req(GET, bucket, key))[:10])
        s.close()
        print("sent")
        return
    elif case == "huge_message": # a header that declares a 1 GiB message
        s.sendall(struct.pack(">IBBHQII", MAGIC, 1, 1, 0, 1, 1 << 30, 0) + b"x" * 100)
    else:
        sys.exit("obj_raw.py: unknown case %r" % case)
    out, closed = replies(s)
    print("replies=[%s] closed=%s" % (" ".join(out), "yes" if closed else "no"))

main()
EOF
export HERE

# ================================================================
section "dev up: 6 nodes, 3 voters, 4+2"
expect "dev up --nodes 6 --voters 3 --ec 4+2" 0 'bucket +default \(4\+2\)' \
  timeout 120 "$MEDSHARD" dev up --nodes 6 --voters 3 --ec 4+2 --dir D
remember_pids
check "the cluster is healthy" wait_for 30 healthy
if ! healthy; then finish; exit; fi
for i in 1 2 3 4 5 6; do CTL[$i]=$(ini "$i" control); DATA[$i]=$(ini "$i" data); done

# ================================================================
section "round trips: 0 B, 1 B, 4095 B, 1 MiB + 1 (file and stdin), 64 MiB, $((BIG / MIB)) MiB"
for n in 0 1 4095 $((MIB + 1)) $((64 * MIB)); do
  head -c "$n" /dev/urandom >"$WORK/src.$n"
  put_check "size $n" "$WORK/src.$n" "size/$n" && get_check "size $n" "size/$n"
  [ "$n" -le $((MIB + 1)) ] && rm -f "$WORK/src.$n"
done
SRC64=$WORK/src.$((64 * MIB))   # kept for the range reads
head -c $((MIB + 1)) /dev/urandom >"$WORK/stdin.src"
put_check "stdin, 1 MiB + 1" - "stdin/1m1" "$((MIB + 1))" "$(sha "$WORK/stdin.src")" <"$WORK/stdin.src" &&
  get_check "stdin, 1 MiB + 1" "stdin/1m1"
rm -f "$WORK/stdin.src"
# The big one from a file (its size is known up front), read back through
# a pipe so it never lands on disk twice.
"$SCRIPTS/gen-fastq" "$WORK/big.src" --size "$BIG" --seed 1 2>/dev/null
TMO=900 put_check "size $BIG" "$WORK/big.src" "size/big" && rm -f "$WORK/big.src" &&
  TMO=900 get_check "size $BIG" "size/big"
rm -f "$WORK/big.src"
# The human form of put says the same things in words.
printf 'hello, medshard\n' >"$WORK/hello"
expect "put (human) prints version, size, sha256, object id and anchor leaf" 0 \
  "version.*1" ms put "$WORK/hello" default/hello.txt --content-type text/plain
human_ok() {
  grep -q '16' "$WORK/out" && grep -q "$(sha "$WORK/hello")" "$WORK/out" &&
    grep -Eqi 'object|id' "$WORK/out" && grep -Eqi 'leaf|anchor' "$WORK/out"
}
check "... its size, SHA-256, object id and anchor leaf are in the text" human_ok
expect "a second put of the same key gets version 2" 0 '"version": ?2' \
  ms put "$WORK/hello" default/hello.txt --json
check "stat --json: 6 shards, all up, 4 data + 2 parity, on 6 different nodes" bash -c "
  '$MEDSHARD' stat default/size/4095 --json >'$WORK/s.json' &&
  '$PY' -c \"import json; d=json.load(open('$WORK/s.json')); s=d['shards']
assert sorted(x['index'] for x in s) == list(range(6)), s
assert all(x['state'] == 'up' for x in s), s
assert len({x['node'] for x in s}) == 6, s\""
echo "  round trips took $(since "$T_SECTION") s"

# ================================================================
section "a corrupted shard on disk"
head -c 300000 /dev/urandom >"$WORK/corrupt.src"
if put_check "corrupt target" "$WORK/corrupt.src" "corrupt/obj"; then
  unset 'KEYS[${#KEYS[@]}-1]'   # it keeps a bad shard: not read with nodes down
  oid=$(js "$WORK/put.json" "d['object_id']")
  cn=$(shard_node corrupt/obj 0)
  echo "  object $oid, data shard 0 on node $cn"
  # Flips 64 bytes in the middle of every extent of shard 0 of the object
  # in that node's segment files (docs/FORMATS.md "Shard store").
  flipped=$("$PY" - "$D/n$cn/store/seg" "$oid" 0 <<'EOF'
import glob, mmap, struct, sys
segdir, oid, index = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
magic = struct.pack("<I", 0x5244534D)
n = 0
for path in sorted(glob.glob(segdir + "/*.seg")):
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 0)
        i = m.find(magic, 4096)
        while i >= 0:
            kind, = struct.unpack_from("<H", m, i + 6)
            idx, nblocks = struct.unpack_from("<II", m, i + 24)
            length, = struct.unpack_from("<Q", m, i + 40)
            if kind == 1 and m[i + 8:i + 24] == oid and idx == index and length >= 64:
                at = i + 64 + 8 * nblocks + length // 2
                m[at:at + 64] = bytes(b ^ 0xFF for b in m[at:at + 64])
                n += 1
            i = m.find(magic, i + 4)
        m.flush()
        m.close()
print(n)
EOF
)
  check "flipped bytes in $flipped extent(s) of shard 0 on node $cn" test "${flipped:-0}" -ge 1
  rm -f "$WORK/got"
  ms get default/corrupt/obj "$WORK/got" 2>"$WORK/get.err"
  check "get still returns the right bytes" cmp -s "$WORK/got" "$WORK/corrupt.src"
  # The node that read the bad block, or the coordinator that decoded
  # around it, names the object or its shard and the checksum failure.
  reported() {
    grep -Ei 'checksum|corrupt' "$D"/n*.log | grep -Eiq "$oid|corrupt/obj|shard 0"
  }
  check "a node's log reports the bad shard" wait_for 5 reported
  grep -Ehi 'checksum|corrupt' "$D"/n*.log | head -3 | sed 's/^/    | /'
fi
rm -f "$WORK/corrupt.src" "$WORK/got"

# ================================================================
section "$RANGES range reads of the 64 MiB object, every node up"
if [ -n "${SHA[size/$((64 * MIB))]:-}" ]; then
  check "$RANGES seeded range reads match the source bytes" \
    "$PY" "$WORK/ranges.py" "$MEDSHARD" "default/size/$((64 * MIB))" "$SRC64" "$RANGES" 1
fi

# ================================================================
section "2 nodes down: the ones holding data shards 0 and 1 of the 64 MiB object"
K64=size/$((64 * MIB))
ms stat "default/$K64" --json >"$WORK/s64.json"
n0=$(js "$WORK/s64.json" "[s['node'] for s in d['shards'] if s['index'] == 0][0]")
n1=$(js "$WORK/s64.json" "[s['node'] for s in d['shards'] if s['index'] == 1][0]")
n2=$(js "$WORK/s64.json" "[s['node'] for s in d['shards'] if s['index'] == 2][0]")
if [ -z "$n0" ] || [ -z "$n1" ] || [ -z "$n2" ]; then
  bad "stat --json of $K64 names the nodes of shards 0, 1, 2"; finish; exit
fi
expect "dev kill $n0" 0 "node $n0 .* killed" ms dev kill "$n0" --dir D
# With 1 node down every PUT still has k+1 = 5 targets: it succeeds with
# that node's shard as a hole, whichever index placement gave it.
head -c 100000 /dev/urandom >"$WORK/small"
for j in 1 2 3 4 5 6; do
  ms put "$WORK/small" "default/onedown/$j" --json >"$WORK/put.json" 2>"$WORK/put.err"
  rc=$?
  h=$(js "$WORK/put.json" "d['holes']")
  if [ "$rc" = 0 ] && [ "$(js "$WORK/put.json" "len(d['holes'])")" = 1 ]; then
    ok "put $j with node $n0 down succeeds with one hole $h"
  else bad "put $j with node $n0 down (exit $rc, holes ${h:-none}): $(cat "$WORK/put.err")"; fi
done
expect "dev kill $n1" 0 "node $n1 .* killed" ms dev kill "$n1" --dir D
for key in "${KEYS[@]}"; do TMO=900 get_check "2 down" "$key"; done
stat_down() {
  ms stat "default/$K64" --json >"$WORK/s.json" 2>/dev/null &&
    [ "$(js "$WORK/s.json" "sorted(s['index'] for s in d['shards'] if s['state'] == 'down')")" = "[0, 1]" ]
}
# UNTESTED until issue 6: no failure detector marks a node down in the
# cluster map yet, so stat still says "up" for a SIGKILLed node's shards.
if stat_down; then ok "stat --json shows shards 0 and 1 down"; else
  echo "  (not checked yet, issue 6: stat --json says $(js "$WORK/s.json" "[s['state'] for s in d['shards']]"))"; fi
check "$RANGES range reads with 2 nodes down match the source bytes" \
  "$PY" "$WORK/ranges.py" "$MEDSHARD" "default/$K64" "$SRC64" "$RANGES" 2
expect "put with 2 of 6 nodes down is refused (fewer than k+1 = 5 targets)" 1 'medshard put: ' \
  ms put "$WORK/small" default/twodown/obj
check "... and nothing is visible under its name" not_found twodown/obj

section "a 3rd node down: reads fail loudly"
expect "dev kill $n2" 0 "node $n2 .* killed" ms dev kill "$n2" --dir D
rm -f "$WORK/got"
expect "get with 3 shards missing exits 1 with a sentence" 1 '^medshard get: ' \
  ms get "default/$K64" "$WORK/got"
names_missing() { "$PY" - "$WORK/out" <<'EOF'
import re, sys
msg = open(sys.argv[1]).read()
sys.exit(0 if re.search(r"shard", msg) and all(re.search(r"\b%d\b" % i, msg) for i in (0, 1, 2)) else 1)
EOF
}
check "... naming the missing shards 0, 1 and 2" names_missing
check "... and the output file is removed" test ! -e "$WORK/got"
check "... with no temporary file left beside it" test -z "$(compgen -G "$WORK/got?*")"
ms get "default/$K64" - >"$WORK/got.stdout" 2>/dev/null
rc=$?
check "get to stdout fails too (exit $rc)" test "$rc" = 1
check "... after writing no wrong byte ($(stat -c %s "$WORK/got.stdout") bytes, a prefix of the object)" \
  cmp -s -n "$(stat -c %s "$WORK/got.stdout")" "$WORK/got.stdout" "$SRC64"
rm -f "$WORK/got.stdout"
# (An object smaller than a unit lives in data shard 0 alone and may still
# read; the big one needs every data shard.)
TMO=900 expect "the $((BIG / MIB)) MiB object fails the same way" 1 '^medshard get: .*shard' \
  ms get default/size/big "$WORK/got"
check "... and leaves no file" test ! -e "$WORK/got"
for n in "$n0" "$n1" "$n2"; do expect "dev start $n" 0 "node $n started" ms dev start "$n" --dir D; done
check "the cluster is healthy again" wait_for 60 healthy
get_check "all back" "$K64"
echo "  node loss took $(since "$T_SECTION") s"

# ================================================================
# COORD I: the node that coordinates a request sent with --node CTL[I].
COORD=3
# gen2: the body of both mid-PUT cases, a seeded FASTQ stream of BIG bytes.
gen2() { "$SCRIPTS/gen-fastq" - --size "$BIG" --seed 2 2>/dev/null; }
read -r SHA2 SIZE2 < <(gen2 | "$PY" -c '
import hashlib, sys
h, n = hashlib.sha256(), 0
while True:
    b = sys.stdin.buffer.read(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(h.hexdigest(), n)')
# bg_put KEY OUT ARGS...: starts `put - default/KEY ARGS` on gen2 in the
# background, output in OUT; PUTPID is the medshard process.
bg_put() {
  local key=$1 out=$2
  shift 2
  "$MEDSHARD" put - "default/$key" "$@" >"$out" 2>&1 < <(gen2) &
  PUTPID=$!
}
# under_way PID BYTES: waits (120 s at most) until process PID has read
# BYTES (of its stdin); fails at once if it exits first.
under_way() {
  local deadline=$(( $(date +%s) + 120 )) n
  while [ "$(date +%s)" -lt "$deadline" ]; do
    n=$(awk '/^rchar/ { print $2 }' "/proc/$1/io" 2>/dev/null) || return 1
    [ -n "$n" ] || return 1
    [ "$n" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
# reap PID SECONDS: waits up to SECONDS for PID to exit (SIGKILL after
# that) and sets RC to its exit status.
reap() {
  local deadline=$(( $(date +%s) + $2 ))
  while kill -0 "$1" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
  kill -KILL "$1" 2>/dev/null
  wait "$1"
  RC=$?
}

section "SIGKILL a target mid-PUT of $((BIG / MIB)) MiB"
victim=
for i in 6 5 4; do [ "$i" != "$COORD" ] && victim=$i && break; done
bg_put holes/big "$WORK/put.json" --json --node "${CTL[$COORD]}"
check "the PUT is under way (a quarter of the body read)" under_way "$PUTPID" $((BIG / 4))
expect "dev kill $victim (a target, not the coordinator)" 0 "killed" ms dev kill "$victim" --dir D
reap "$PUTPID" 900
check "the PUT still succeeds (exit $RC)" test "$RC" = 0
[ "$RC" = 0 ] || sed 's/^/    | /' "$WORK/put.json" | head -10
hole=$(js "$WORK/put.json" "d['holes'][0] if len(d['holes']) == 1 else ''")
check "put --json records exactly one hole (${hole:-none})" test -n "$hole"
check "... and the size and SHA-256 of the whole body" \
  test "$(js "$WORK/put.json" "d['sha256'], d['size']")" = "$SHA2 $SIZE2"
if [ -n "$hole" ]; then
  stat_to holes/big "$WORK/s.json"
  check "stat --json shows shard $hole as a hole on node 0, the others on live nodes" \
    test "$(js "$WORK/s.json" "all((s['state'] == 'hole') == (s['index'] == $hole) and
(s['node'] == 0) == (s['index'] == $hole) and s['node'] != $victim for s in d['shards'])")" = True
  SHA[holes/big]=$SHA2
  SIZE[holes/big]=$SIZE2
  TMO=900 get_check "with a hole" holes/big
fi
expect "dev start $victim" 0 "node $victim started" ms dev start "$victim" --dir D
check "the cluster is healthy again" wait_for 60 healthy

# ================================================================
section "SIGKILL the coordinator mid-PUT of $((BIG / MIB)) MiB"
bg_put crash/big "$WORK/put.out" --node "${CTL[$COORD]}"
check "the PUT is under way (a quarter of the body read)" under_way "$PUTPID" $((BIG / 4))
expect "dev kill $COORD (the coordinator)" 0 "killed" ms dev kill "$COORD" --dir D
reap "$PUTPID" 120
check "the client fails (exit $RC) with a sentence" \
  bash -c "[ $RC = 1 ] && grep -q '^medshard put: ' '$WORK/put.out'"
sed 's/^/    | /' "$WORK/put.out" | head -3
check "stat: crash/big not found" not_found crash/big
check "ls does not list it" not_listed crash/big
expect "dev start $COORD" 0 "node $COORD started" ms dev start "$COORD" --dir D
check "the cluster is healthy again" wait_for 60 healthy
check "stat is still not found after the coordinator restarts" not_found crash/big
TMO=900 put_check "retry" - crash/big "$SIZE2" "$SHA2" < <(gen2) && TMO=900 get_check "retry" crash/big
echo "  mid-PUT kills took $(since "$T_SECTION") s"

# ================================================================
section "bad frames on node 2's data port"
raw() { "$PY" "$WORK/obj_raw.py" "${DATA[2]}" "$@" 2>&1; }
refused() { # NAME OUT: an error reply or a closed connection, never a manifest
  if grep -Eq 'replies=\[.*(MSD_E|-[0-9])|closed=yes|^sent$' <<<"$2" && ! grep -q 'manifest' <<<"$2"; then
    ok "$1 ($2)"; else bad "$1 ($2)"; fi
}
refused "PUT whose body is shorter than declared" "$(raw put_short default raw/short)"
refused "PUT whose body is longer than declared" "$(raw put_long default raw/long)"
refused "PUT cut off mid-frame" "$(raw put_cut default raw/cut)"
refused "PUT to an unknown bucket" "$(raw put_unknown_bucket nosuchbucket raw/x)"
# Frames of any size, straddling stripe boundaries, store the right bytes.
for c in put_frames put_frames_streamed; do
  out=$(raw "$c" default "frames/$c")
  want=$(sed -n 's/^sha256=//p' <<<"$out")
  got=$(ms get "default/frames/$c" - 2>/dev/null | sha256sum | cut -c1-64)
  if grep -Eq 'replies=\[(0|OK)[^ ]* manifest\]' <<<"$out" && [ -n "$want" ] && [ "$got" = "$want" ]; then
    ok "$c: a body in frames of 1 B to 1 MiB reads back byte-identical"
  else bad "$c: $out; read back sha256 ${got:-none}"; fi
done
refused "GET of an unknown key" "$(raw get default raw/nosuchkey)"
refused "GET in an unknown bucket" "$(raw get nosuchbucket raw/x)"
refused "PUT_DATA without a PUT" "$(raw data_first)"
refused "seeded random garbage" "$(raw garbage)"
refused "a header cut short" "$(raw short_header default raw/x)"
refused "a header declaring a 1 GiB message" "$(raw huge_message)"
check "node 2 is still running" kill -0 "$(ini 2 pid)"
for k in raw/short raw/long raw/cut; do check "nothing stored under $k" not_found "$k"; done
check "ls lists nothing under raw/" not_listed raw/
head -c 200000 /dev/urandom >"$WORK/after"
put_check "after the bad frames, through node 2" "$WORK/after" after/raw &&
  get_check "after the bad frames" after/raw
check "get through node 2 (--node) after the bad frames: byte-identical" \
  bash -c "'$MEDSHARD' get default/after/raw '$WORK/got2' --node '${CTL[2]}' && cmp -s '$WORK/got2' '$WORK/after'"
rm -f "$WORK/got2"

# ================================================================
section "bad CLI input"
expect "put to an unknown bucket" 1 '^medshard put: .*nosuchbucket' \
  ms put "$WORK/after" nosuchbucket/k
expect "get of an unknown key" 1 '^medshard get: .*(not found|no such|does not exist)' \
  ms get default/no/such/key "$WORK/got"
check "... leaves no file" test ! -e "$WORK/got"
echo precious >"$WORK/existing"
expect "get of an unknown key into an existing file" 1 '^medshard get: ' \
  ms get default/no/such/key "$WORK/existing"
check "... leaves that file as it was, and no temporary file" \
  bash -c "[ \"\$(cat '$WORK/existing')\" = precious ] && [ -z \"\$(compgen -G '$WORK/existing?*')\" ]"
expect "get from an unknown bucket" 1 '^medshard get: .*nosuchbucket' ms get nosuchbucket/k "$WORK/got"
for r in 10-5 abc 5 "" -7 1-2-3 18446744073709551616-; do
  rm -f "$WORK/got"
  ms get default/size/4095 "$WORK/got" --range "$r" >"$WORK/out" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ] && grep -qi 'range' "$WORK/out" && [ ! -e "$WORK/got" ]; then
    ok "--range $r: refused (exit $rc): $(head -1 "$WORK/out")"
  else bad "--range $r: exit $rc, file $( [ -e "$WORK/got" ] && echo left || echo none)"; sed 's/^/    | /' "$WORK/out"; fi
done
expect "--range past the end (4095- of a 4095-byte object)" 1 '^medshard get: .*range' \
  ms get default/size/4095 "$WORK/got" --range 4095-
check "... leaves no file" test ! -e "$WORK/got"
expect "put of a file that does not exist" 1 '^medshard put: .*nonexistent' \
  ms put "$WORK/nonexistent" default/bad/nofile
mkdir -p "$WORK/adir"
expect "put of a directory" 1 '^medshard put: .*adir' ms put "$WORK/adir" default/bad/dir
if [ "$(id -u)" -ne 0 ]; then
  cp "$WORK/after" "$WORK/unreadable" && chmod 000 "$WORK/unreadable"
  expect "put of an unreadable file" 1 '^medshard put: .*unreadable' ms put "$WORK/unreadable" default/bad/unreadable
else
  echo "  (root reads any file: the unreadable-file case is not run)"
fi
expect "put with the cluster unreachable" 1 'cannot reach|unreachable|127\.0\.0\.1:1' \
  ms put "$WORK/after" default/bad/unreachable --node 127.0.0.1:1
expect "get with the cluster unreachable" 1 'cannot reach|unreachable|127\.0\.0\.1:1' \
  ms get default/size/1 "$WORK/got" --node 127.0.0.1:1
check "... leaves no file" test ! -e "$WORK/got"
expect "put with no key (bucket only)" 2 'medshard put: ' ms put "$WORK/after" default
expect "put with no arguments" 2 'usage|medshard put' ms put
for k in bad/nofile bad/dir bad/unreachable; do check "nothing stored under $k" not_found "$k"; done
check "ls lists nothing under bad/" not_listed bad/
check "ls lists what was stored (hello.txt, size/4095)" bash -c "grep -q hello.txt '$WORK/ls.out' && grep -q size/4095 '$WORK/ls.out'"

# ================================================================
section "every node still runs, and stops cleanly"
check "all 6 nodes alive and one leader" healthy
expect "dev down stops all 6 (SIGTERM)" 0 'stopped nodes 1 2 3 4 5 6' ms dev down --dir D
# Under the sanitizers a node reports leaks and errors in its log as it exits.
for i in 1 2 3 4 5 6; do
  check "node $i logged no sanitizer report" bash -c "! grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' '$D/n$i.log'"
done
rm -f "$SRC64"
finish
