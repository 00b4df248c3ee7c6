#!/usr/bin/env bash
# Command-line checks for the medshard binary: verbs, the ec benchmark's
# output, and clear errors (non-zero exit, a message naming the problem)
# for bad input. Usage: test_cli.sh PATH/TO/medshard
set -u
bin=$1
pass=0
fail=0
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

# expect NAME EXIT_CODE PATTERN(stdout+stderr, grep -E) -- ARGS...
expect() {
  local name=$1 want_rc=$2 pattern=$3
  shift 4
  timeout 120 "$bin" "$@" >"$out" 2>"$err"
  local rc=$?
  if [ "$rc" -eq "$want_rc" ] && cat "$out" "$err" | grep -Eq -- "$pattern"; then
    pass=$((pass + 1))
    echo "ok   $name"
  else
    fail=$((fail + 1))
    echo "FAIL $name (exit $rc, wanted $want_rc; pattern '$pattern')"
    sed 's/^/     | /' "$out" "$err"
  fi
}

expect "version" 0 '^medshard [0-9]' -- version
expect "help lists bench" 0 'bench ec' -- help
expect "no command" 2 'usage: medshard' --
expect "unknown command" 2 "unknown command 'frobnicate'" -- frobnicate
expect "unknown benchmark" 2 "unknown benchmark 'nosuch'" -- bench nosuch
expect "bench ec json" 0 '"encode_ratio":[0-9.]+' -- bench ec --size 1M --rounds 1 --json
expect "bench ec 10+4 human" 0 'striper, zero-copy +[0-9.]+ GB/s +ratio' -- \
  bench ec --k 10 --m 4 --unit 64K --size 2M --rounds 1
expect "bench ec k+1 skips 2-erasure decode" 0 '"encode_ratio"' -- \
  bench ec --k 3 --m 1 --unit 4K --size 64K --rounds 1 --json
expect "misaligned unit" 1 'unit=4100: stripe unit must be a multiple of 64' -- \
  bench ec --unit 4100 --size 1M
expect "zero k" 1 'k=0 m=2 .*erasure parameters out of range' -- bench ec --k 0
expect "k+m too large" 1 'erasure parameters out of range' -- bench ec --k 40 --m 9
expect "not a size" 2 "--unit abc: not a size" -- bench ec --unit abc
expect "absurd size" 2 "--size 99999999999999999999: not a size" -- \
  bench ec --size 99999999999999999999
expect "stray argument" 2 "unexpected argument 'extra'" -- bench ec extra

expect "bench store needs --dir" 2 "--dir DIR is required" -- bench store
expect "bench store bad dir" 2 "--dir /nonexistent/x: not a directory" -- \
  bench store --dir /nonexistent/x
expect "bench store bad size" 2 "--size 12: need a size of at least 1M" -- \
  bench store --dir /tmp --size 12
tmp=$(mktemp -d)
expect "bench store json" 0 '"shard_bytes":4096,"shards":[0-9]+,"write_mbps":[0-9.]+' -- \
  bench store --dir "$tmp" --size 2M --rounds 1 --no-fio --json
rm -rf "$tmp"

# node: an over-long value is refused, not cut short (63-byte addresses,
# 31-byte zone); a zone of exactly 31 bytes gets as far as the config check.
long_host=$(printf 'h%.0s' {1..60})
expect "node --raft too long" 2 'medshard node: --raft value is longer than 63 bytes' -- \
  node --id 1 --raft "$long_host:7001"
expect "node --join too long" 2 'medshard node: --join value is longer than 63 bytes' -- \
  node --id 1 --join "$long_host:7101"
expect "node --zone too long" 2 'medshard node: --zone value is longer than 31 bytes' -- \
  node --zone "$(printf 'z%.0s' {1..32})"
expect "node --zone of 31 bytes fits" 2 'medshard node: node id missing' -- \
  node --zone "$(printf 'z%.0s' {1..31})"
expect "node --dir too long" 2 'medshard node: --dir value is longer than 511 bytes' -- \
  node --dir "$(printf 'd%.0s' {1..512})"

# Object verbs: usage errors exit 2 and name the problem; a cluster that
# does not answer (port 1 refuses) exits 1 saying so. No cluster needed.
nocluster=$(mktemp -d)
here=$PWD
bin=$(realpath "$bin") # the no-cluster checks run from another directory
for verb in stat ls rm verify; do
  expect "$verb without arguments" 2 "usage: medshard $verb" -- $verb
  expect "$verb --help" 0 "usage: medshard $verb" -- $verb --help
  expect "$verb extra argument" 2 "medshard $verb: unexpected argument 'more'" -- \
    $verb b/k more --node 127.0.0.1:1
  expect "$verb unknown option" 2 "medshard $verb: unknown option.*'--frob'" -- \
    $verb b/k --frob --node 127.0.0.1:1
  expect "$verb bucket missing" 2 "medshard $verb: '/k' is not BUCKET" -- $verb /k --node 127.0.0.1:1
  expect "$verb bucket too long" 2 "medshard $verb: bucket name '$(printf 'b%.0s' {1..64})' is longer than 63 bytes" -- \
    $verb "$(printf 'b%.0s' {1..64})/k" --node 127.0.0.1:1
  expect "$verb cluster unreachable" 1 "medshard $verb: cannot reach the cluster at 127.0.0.1:1" -- \
    $verb b/k --node 127.0.0.1:1 --json
  # No --node, no MEDSHARD_NODE, no ./medshard.conf: say how to name one.
  cd "$nocluster"
  MEDSHARD_NODE= expect "$verb without a cluster" 2 "medshard $verb: no cluster: pass --node" -- \
    $verb b/k
  cd "$here"
done
for verb in stat rm verify; do
  expect "$verb needs a key" 2 "medshard $verb: 'b' is not BUCKET/KEY" -- $verb b --node 127.0.0.1:1
  expect "$verb empty key" 2 "medshard $verb: 'b/' is not BUCKET/KEY" -- $verb b/ --node 127.0.0.1:1
  expect "$verb key too long" 2 "medshard $verb: the key is 1025 bytes long; keys are at most 1024" -- \
    $verb "b/$(printf 'k%.0s' {1..1025})" --node 127.0.0.1:1
done
expect "ls bucket alone" 1 "medshard ls: cannot reach the cluster" -- ls b --node 127.0.0.1:1
expect "ls bucket/prefix" 1 "medshard ls: cannot reach the cluster" -- ls b/ct/ --node 127.0.0.1:1
expect "ls prefix too long" 2 "medshard ls: the prefix is 1025 bytes long" -- \
  ls "b/$(printf 'k%.0s' {1..1025})" --node 127.0.0.1:1
expect "stat takes no --keys" 2 "medshard stat: unknown option.*'--keys'" -- \
  stat b/k --keys x --node 127.0.0.1:1
expect "verify keys file missing" 2 "medshard verify: cannot read keys file /nonexistent/keys" -- \
  verify b/k --keys /nonexistent/keys --node 127.0.0.1:1
badkeys=$(mktemp)
echo "not a keys file" >"$badkeys"
expect "verify bad keys file" 2 "medshard verify: keys file .*: line 1: not a trusted keys file" -- \
  verify b/k --keys "$badkeys" --node 127.0.0.1:1
rm -rf "$nocluster" "$badkeys"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
