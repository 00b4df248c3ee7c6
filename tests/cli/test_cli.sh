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

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
