#!/usr/bin/env bash
# Bad input on the control port of real `medshard node` processes (3 voters
# on 127.0.0.1): every malformed frame, undecodable message, unknown op and
# refused command must get a clear error (an error frame where the frame
# can be addressed, else a closed connection), a line in the node's log
# naming the peer, no crash, and no change to the chain or the cluster map.
# A command the FSM refuses is recorded as an applied entry (`applied`
# moves, nothing else); one the control port refuses (a client's CutBlock,
# a NodeJoin without the node authentication tag) never reaches the Raft
# log (`applied` stays). Then 200 idle half-open connections must not stop
# a normal client, and normal writes still work. Frames are made by
# tests/cluster/ctl_raw.py (hand-encoded protobuf: no python3-protobuf
# needed); it tags NodeJoins with the cluster secret passed in CTL_SECRET.
# Usage: test_ctl_badinput.sh path/to/medshard
MEDSHARD=${1:?usage: test_ctl_badinput.sh MEDSHARD}
. "$(dirname "$0")/lib.sh"
RAW=$(cd "$(dirname "$0")" && pwd)/ctl_raw.py
PEER='127\.0\.0\.1:[0-9]+' # how a log line names the client

raw() { CTL_SECRET=$SECRET timeout 60 python3 "$RAW" "$@" 2>&1; }
state_all() { for i in 1 2 3; do echo "$i $(raw "${CTL[$i]}" state)"; done; }
lines() { wc -l <"$WORK/n$1.log"; }
# logged I FROM REGEX: node I's log has a line matching REGEX after line FROM.
logged() { tail -n +"$(($2 + 1))" "$WORK/n$1.log" | grep -Eq -- "$3"; }
serves() { raw "${CTL[$1]}" head | grep -q "frame=yes.*name=OK"; }
healthy() { node_alive "$1" && serves "$1"; }

# one NODE NAME REPLY_RE LOG_RE CASE [ARGS...]: sends CASE to NODE; checks
# the reply line against REPLY_RE, the log against LOG_RE (skipped if
# empty), that the node still serves, and that no node's state changed.
one() {
  local i=$1 name=$2 reply=$3 log=$4 from out; shift 4
  from=$(lines "$i")
  out=$(raw "${CTL[$i]}" "$@")
  echo "  $name -> $out"
  check "$name: $(describe_reply "$reply")" grep -Eq -- "$reply" <<<"$out"
  [ -z "$log" ] || check "$name: logged" wait_for 5 logged "$i" "$from" "$log"
  check "$name: node $i alive and serving" healthy "$i"
  check "$name: chain and cluster map unchanged on every node" same_state
}
describe_reply() {
  case $1 in
    frame=no*) echo "connection closed, no reply" ;;
    closed=yes) echo "connection closed" ;;
    *closed=yes*) echo "error frame, then closed" ;;
    *) echo "expected reply" ;;
  esac
}
same_state() { [ "$(state_all)" = "$BASE" ]; }
applied_all() { for i in 1 2 3; do echo "$i $(head_field "$i" applied)"; done; }

# denied NODE NAME MESSAGE_RE LOG_RE CASE [ARGS...]: like `one` for a
# request the control port refuses with MSD_EDENIED before it reaches the
# Raft log: no node's `applied` moves (checked after half a second, time
# enough for an entry to commit).
denied() {
  local i=$1 name=$2 msg=$3 log=$4 before; shift 4
  before=$(applied_all)
  one "$i" "$name" "name=MSD_EDENIED message='$msg'.*closed=no" \
    "refused a request from $PEER: $log" "$@"
  sleep 0.5
  check "$name: nothing appended to the Raft log (applied unchanged)" [ "$(applied_all)" = "$before" ]
}

cluster_init 3
for i in 1 2 3; do start_node "$i"; done
have_leader() { [ "$(leader_of 1)" != 0 ] && [ -n "$(leader_of 1)" ] && [ "$(head_field 1 voters)" = 3 ]; }
check "3 voters elect a leader and join the cluster map" wait_for 30 have_leader
check "bucket create" "$MEDSHARD" bucket create anchors --ec 2+1 --node "$ADDRS"
check "100 anchors" "$MEDSHARD" bench anchor --node "$ADDRS" --count 100 --clients 2 --batch 10 \
  --acks "$WORK/acks0"
settled() { # every node at the same sealed head, nothing pending
  local s
  s=$(state_all | cut -d' ' -f2-4 | sort -u)
  [ "$(wc -l <<<"$s")" = 1 ] && [ "$(head_field 1 height)" = "$(head_field 1 sealed)" ] &&
    [ "$(head_field 1 leaves)" = 100 ]
}
check "nodes agree on a sealed head" wait_for 30 settled
L=$(leader_of 1)
F=$((L % 3 + 1)) # a follower
BASE=$(state_all)
echo "leader $L, follower $F; state:"; echo "$BASE"

# ---- frames that break the rules (proto/wire.h; docs/FORMATS.md "Frames") ----
CLOSED="control connection from $PEER closed"
one "$L" "random garbage" 'frame=no closed=yes' "$CLOSED: bad magic" garbage
one "$L" "bad magic" 'frame=no closed=yes' "$CLOSED: bad magic" badmagic
one "$L" "unknown frame version" 'frame=no closed=yes' "$CLOSED: unsupported frame version" \
  badversion
# A version 1 header can be addressed by its request id: an error frame
# with that id, then the close (docs/FORMATS.md "Frames").
for c in "badkind|28|unknown frame kind" "responsekind|29|response frame sent to a server" \
         "reserved|30|reserved header bytes are not zero" \
         "msglen|11|message length over the 64 KiB bound" \
         "payloadlen|12|payload length over this connection's bound"; do
  IFS='|' read -r name rid why <<<"$c"
  one "$L" "$name" "frame=yes rid=$rid code=-?[0-9]+ name=MSD_EFRAME message=.$why. .*closed=yes" \
    "$CLOSED: $why" "$name"
done
one "$L" "truncated header, then close" 'frame=no closed=yes' \
  "$CLOSED: peer closed in the middle of a frame" truncated
one "$L" "undecodable message" 'name=MSD_EDECODE .*closed=yes' "$CLOSED: undecodable request" \
  undecodable
one "$L" "CtlRequest format_version 2" 'name=MSD_EVERSION .*closed=yes' \
  "$CLOSED: unsupported request version" reqversion

# ---- well-formed frames the node must refuse ----
one "$L" "unknown op" "name=MSD_EPARAM message='unknown control operation'.*closed=no then_head=yes" \
  "refused a request from $PEER: unknown control operation" unknownop
one "$L" "submit without commands" "name=MSD_EPARAM message='a submit carries 1 to 4096" \
  "refused a request from $PEER: a submit carries 1 to 4096 commands" emptysubmit
one "$L" "5-byte request id" "name=MSD_EPARAM message='request ids must be empty or 16 bytes'" \
  "refused a request from $PEER: request ids must be empty or 16 bytes" badrid

# Only the leader's own tick cuts blocks: a client's CutBlock for the next
# height that disagrees with the state would, once applied, halt every
# node with a divergence alarm. Sent to the leader, the node that would
# append it.
denied "$L" "client CutBlock to the leader (node $L)" \
  "CutBlock is made by the leader itself, never taken from the control port" \
  "CutBlock is made by the leader itself" cutblock
no_alarm() { for i in 1 2 3; do [ -z "$(head_json "$i" | sed -n 's/.*"alarm":"\(.\+\)".*/\1/p')" ] || return 1; done; }
check "client CutBlock: no alarm on any node" no_alarm

# NodeJoin and NodeState change the cluster map and the Raft voters: only
# senders that hold the cluster secret may submit them (the node
# authentication tag). Before the tag, anyone who reached a control port
# could add voters. The whole submit is refused, not just those commands.
NEEDS_TAG="NodeJoin and NodeState need the node authentication tag \(the cluster secret\)"
denied "$L" "NodeJoin without a tag: node 2's id with another key" "$NEEDS_TAG" "$NEEDS_TAG" \
  dupjoin 2 none
denied "$L" "NodeJoin of new id 7 with a tag made from another secret" "$NEEDS_TAG" "$NEEDS_TAG" \
  newjoin 7 wrong
denied "$L" "NodeJoin of new voter 8 without a tag, to the leader" "$NEEDS_TAG" "$NEEDS_TAG" \
  newjoin 8 none
denied "$F" "NodeJoin of new voter 9 without a tag, to follower $F" "$NEEDS_TAG" "$NEEDS_TAG" \
  newjoin 9 none
denied "$L" "a PutObject and an untagged NodeJoin (id 10) in one submit" "$NEEDS_TAG" \
  "$NEEDS_TAG" mixedjoin 10 anchors
denied "$L" "NodeState marking node $F OUT, without a tag" "$NEEDS_TAG" "$NEEDS_TAG" \
  nodestate "$F" 4 none
three_voters() {
  for i in 1 2 3; do
    [ "$(head_field "$i" voters)" = 3 ] &&
      raw "${CTL[$i]}" state | grep -Eq ' nodes=1:[0-9a-f]+,2:[0-9a-f]+,3:[0-9a-f]+$' || return 1
  done
}
check "still 3 voters and only nodes 1 to 3 in the cluster map, on every node" three_voters

# A request of exactly the bound (24 + 65,536 bytes) is served. It once
# failed most tries: read_cb closed the connection when one read filled
# the initial 64 KiB buffer, before alloc_cb could grow it.
max_served() {
  local _
  for _ in 1 2 3 4 5; do
    raw "${CTL[$L]}" maxmsg | grep -q 'frame=yes .*name=OK .*closed=no' || return 1
  done
}
check "a message of exactly 64 KiB (the bound) is served, 5 of 5 tries" max_served
check "node $L alive and serving after the 64 KiB messages" healthy "$L"
out=$(raw "${CTL[$L]}" pipeline 50)
check "50 pipelined requests in one write: 50 answers in order ($out)" \
  grep -q "answers=50 in_order=yes" <<<"$out"
# A client that pipelines requests and closes without reading: the node's
# answers hit a closed socket (EPIPE; SIGPIPE killed nodes before 43b0de9).
raw "${CTL[$F]}" pipeclose 200 >/dev/null
sleep 1
check "node $F survives a client that closes before reading its answers" healthy "$F"

# ---- commands the FSM refuses: recorded as outcomes, nothing else moves ----
one "$L" "PutObject into an unknown bucket" "outcomes=\['MSD_ENOTFOUND:bucket no-such-bucket does not exist'\]" \
  'command rejected: bucket no-such-bucket does not exist' putunknown
check "bucket no-such-bucket still does not exist" \
  grep -q "name=MSD_ENOTFOUND" <<<"$(raw "${CTL[$F]}" getbucket no-such-bucket)"
# NodeJoins with a valid tag (made from the cluster secret) reach the FSM,
# which refuses these two.
one "$L" "tagged NodeJoin: node 2's id with another key" \
  "outcomes=\['MSD_EEXIST:node id 2 is taken by a node with another key'\]" \
  'command rejected: node id 2 is taken by a node with another key' dupjoin 2 good
one "$L" "tagged NodeJoin: new id 77 with node 1's key" \
  "outcomes=\['MSD_EEXIST:node 77: its public key already belongs to node 1'\]" \
  'command rejected: node 77: its public key already belongs to node 1' stolenkey 1 77 good
one "$L" "Cosign by a node not in the cluster map" \
  "outcomes=\['MSD_ENOTFOUND:Cosign of block [0-9]+ by node 99: signer is not in the cluster map'\]" \
  'command rejected: Cosign of block [0-9]+ by node 99: signer is not in the cluster map' \
  cosign_unknown 99

# A Cosign that claims follower F but is signed by another key. F is
# paused (SIGSTOP: its sockets stay open) so the next block lacks its
# signature; the forgery must be refused, and F's own cosignatures must
# still count on later blocks.
h0=$(head_field "$L" height)
kill -STOP "${PID[$F]}"
"$MEDSHARD" bench anchor --node "${CTL[$L]}" --count 20 --clients 1 --batch 5 >/dev/null 2>&1
sealed_past() { local h; h=$(head_field "$L" sealed); [ -n "$h" ] && [ "$h" -gt "$h0" ]; }
check "a block is sealed while node $F is paused" wait_for 15 sealed_past
H=$(head_field "$L" height)
before=$(raw "${CTL[$L]}" cosigners "$H")
from=$(lines "$L")
out=$(raw "${CTL[$L]}" cosign_forged "$H" "$F")
echo "  forged cosign of block $H as node $F -> $out"
check "forged Cosign refused: MSD_EBADSIG" \
  grep -Eq "outcomes=\[.MSD_EBADSIG:Cosign of block $H by node $F: signature does not verify" <<<"$out"
check "forged Cosign logged" wait_for 5 logged "$L" "$from" "command rejected: Cosign of block $H by node $F"
check "block $H's cosigners unchanged ($before)" [ "$(raw "${CTL[$L]}" cosigners "$H")" = "$before" ]
kill -CONT "${PID[$F]}"
caught_up() { [ "$(head_field "$F" head)" = "$(head_field "$L" head)" ]; }
check "node $F catches up after it resumes" wait_for 15 caught_up
"$MEDSHARD" bench anchor --node "${CTL[$L]}" --count 10 --clients 1 --batch 5 >/dev/null 2>&1
signed_by_f() { # a block cut after the forgery carries F's real cosignature
  local h; h=$(head_field "$L" height)
  [ "$h" -gt "$H" ] && raw "${CTL[$L]}" cosigners "$h" | grep -Eq "[=,]$F(,|$)"
}
check "node $F's own cosignatures still count on the next block" wait_for 15 signed_by_f
for i in 1 2 3; do check "node $i alive and serving" healthy "$i"; done

# ---- slowloris: 200 connections send half a header and go idle ----
out=$(raw "${CTL[$L]}" slowloris 200 "$MEDSHARD")
echo "  slowloris -> $out"
check "with 200 idle half-header connections a normal client is served" \
  grep -q "served=yes" <<<"$out"
ms=$(sed -n 's/.* ms=\([0-9]*\).*/\1/p' <<<"$out")
check "... within 2 s (took ${ms:-?} ms)" [ "${ms:-99999}" -lt 2000 ]
check "node $L alive after the idle connections went away" healthy "$L"

# ---- normal work still succeeds ----
check "bucket create after all that" "$MEDSHARD" bucket create after --ec 2+1 --node "$ADDRS"
check "20 anchors after all that" "$MEDSHARD" bench anchor --node "$ADDRS" --count 20 --clients 1 \
  --batch 5 --acks "$WORK/acks1"
same_leaves() { local n; n=$(head_field "$L" leaves); for i in 1 2 3; do [ "$(head_field "$i" leaves)" = "$n" ] || return 1; done; }
check "every node applied them" wait_for 10 same_leaves
for i in 1 2 3; do
  check "node $i holds the new anchors" "$MEDSHARD" bench anchor --node "${CTL[$i]}" --check "$WORK/acks1"
done
check "no node raised an alarm" bash -c "! grep -q ALARM '$WORK'/n?.log"

finish
