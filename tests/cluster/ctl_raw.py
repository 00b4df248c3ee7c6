#!/usr/bin/env python3
"""Raw control-plane frames for the cluster tests: sends one hand-made
(often malformed) request to a node's control port and prints what came
back on one line, e.g.

    frame=yes rid=13 code=-10011 name=MSD_EDECODE message='request message does not decode' outcomes=[] closed=yes

Protobuf is encoded by hand (no python3-protobuf needed): the few
messages of proto/medshard.proto used here, field numbers as there.
Frame header as in proto/wire.h: magic "MSDF", version, kind, two zero
bytes, request id (8), message length (4), payload length (4), big-endian.
Error codes are read from common/err.h (MSD_ERR_BASE minus the position).
NodeJoin and NodeState cases take an AUTH argument: "good" tags the
request with the node authentication tag made from the cluster secret
(hex, in the environment variable CTL_SECRET), "wrong" with a tag made
from another secret, "none" sends no tag.

Usage: ctl_raw.py HOST:PORT CASE [ARGS...]   (cases: see CASES at the end)
"""
import hashlib
import hmac
import os
import re
import socket
import struct
import subprocess
import sys
import time

MAGIC = 0x4D534446
HEADER = 24
MSG_MAX = 64 << 10
TIMEOUT = 5.0

# ---- error names from common/err.h ----

def err_names():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "common", "err.h")
    text = open(path).read()
    body = text[text.index("#define MSD_ERRORS(X)"):text.index("#define MSD_ERR_BASE")]
    return {-10000 - i: name for i, name in enumerate(re.findall(r"X\((MSD_E[A-Z_0-9]+)", body))}

NAMES = err_names()

# ---- protobuf, by hand ----

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def fv(num, v):  # varint field (uint32/uint64/enum/bool)
    return varint(num << 3) + varint(v)

def fb(num, b):  # length-delimited field (bytes, string, message)
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b

def decode(buf):
    """Message bytes -> {field: [value, ...]} (varints as int, the rest bytes)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out

def read_varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i

def unzigzag(v):
    return (v >> 1) ^ -(v & 1)

def one(d, num, default=0):
    return d.get(num, [default])[-1]

# CtlOp
OP_SUBMIT, OP_HEAD, OP_GET_BLOCK, OP_GET_NODES = 1, 2, 4, 7

def ctl_request(op, commands=(), version=1, height=None, auth=None):
    m = fv(1, version) + fv(2, op)
    for c in commands:
        m += fb(3, c)
    if height is not None:
        m += fv(7, height)
    if auth is not None:
        m += fb(11, auth)
    return m

def node_auth_tag(secret, commands):
    """HMAC-SHA256(K, command 1 | command 2 | ...), K = HMAC-SHA256(secret,
    "medshard node-auth v1"). The node recomputes it over its own packing
    of the decoded commands: ours match it because every field here is
    written in field-number order and none holds a default value."""
    key = hmac.new(secret, b"medshard node-auth v1", hashlib.sha256).digest()
    return hmac.new(key, b"".join(commands), hashlib.sha256).digest()

def submit_auth(commands, auth):
    """A SUBMIT of COMMANDS tagged as AUTH says (none, good, wrong)."""
    if auth == "none":
        return ctl_request(OP_SUBMIT, commands)
    if auth == "good":
        secret = os.environ.get("CTL_SECRET")
        if not secret:
            sys.exit("ctl_raw.py: AUTH good needs the cluster secret (hex) in CTL_SECRET")
        tag = node_auth_tag(bytes.fromhex(secret), commands)
        return ctl_request(OP_SUBMIT, commands, auth=tag)
    if auth == "wrong":
        return ctl_request(OP_SUBMIT, commands, auth=node_auth_tag(os.urandom(32), commands))
    sys.exit("ctl_raw.py: AUTH is none, good or wrong, not %r" % auth)

def command(body_field, body, rid=None):
    return fb(1, os.urandom(16) if rid is None else rid) + fb(body_field, body)

def put_object(bucket, key, rid=None):
    policy = fv(1, 1) + fv(2, 2) + fv(3, 1) + fv(4, 1 << 20)
    shards = b"".join(fb(4, fv(1, i) + fv(2, 0) + fb(3, os.urandom(16))) for i in range(3))
    smap = fv(1, 1) + fb(2, policy) + fv(3, 4096) + shards
    man = (fv(1, 1) + fb(2, os.urandom(16)) + fb(3, bucket) + fb(4, key) + fv(6, 4096) +
           fb(7, os.urandom(32)) + fb(8, os.urandom(32)) + fb(11, smap))
    return command(11, fb(1, man), rid)

def node_join(node_id, pubkey, role=1):
    info = (fv(1, 1) + fv(2, node_id) + fb(3, pubkey) + fb(4, "127.0.0.1:9") +
            fb(5, "127.0.0.1:9") + fb(6, "default") + fv(7, 1) + fv(8, role))
    return command(14, fb(1, info))

def node_state(node_id, status):
    return command(15, fv(1, node_id) + fv(2, status))

def cosign(height, node_id, sig):
    return command(17, fv(1, height) + fv(2, node_id) + fb(3, sig))

def cut_block(height, size_before, size_after):
    return command(16, fv(1, height) + fb(2, os.urandom(32)) + fv(3, size_before) +
                   fv(4, size_after) + fb(5, os.urandom(32)) + fv(6, 1) +
                   fv(7, int(time.time() * 1000)) + fv(8, 1))

# ---- frames ----

def header(msg_len, payload_len=0, rid=7, magic=MAGIC, version=1, kind=1, reserved=0):
    return struct.pack(">IBBHQII", magic, version, kind, reserved, rid, msg_len, payload_len)

def frame(msg, **kw):
    return header(len(msg), **kw) + msg

def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)

_leftover = {}  # socket -> bytes received past the last frame read

def read_reply(s, wait_close=True):
    """One response frame (or None) and whether the node closed the
    connection (EOF within a second after the frame, or instead of it)."""
    buf, closed, deadline = _leftover.pop(s, b""), False, time.time() + TIMEOUT
    need = HEADER
    while True:
        if len(buf) >= HEADER:
            need = HEADER + struct.unpack(">I", buf[16:20])[0] + struct.unpack(">I", buf[20:24])[0]
        if len(buf) >= need or time.time() >= deadline:
            break
        try:
            s.settimeout(max(0.05, deadline - time.time()))
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        buf += chunk
    resp = None
    if len(buf) >= need:
        magic, ver, kind, _, rid, mlen, plen = struct.unpack(">IBBHQII", buf[:HEADER])
        if magic != MAGIC or ver != 1 or kind != 2:
            raise ValueError("reply is not a version 1 response frame")
        resp = decode(buf[HEADER:HEADER + mlen])
        resp["rid"] = rid
        buf = buf[need:]
    if buf:
        _leftover[s] = buf
    if wait_close and not closed and not buf:
        try:
            s.settimeout(1.0)
            chunk = s.recv(65536)
            closed = chunk == b""
            if chunk:
                _leftover[s] = chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
    return resp, closed

def describe(resp, closed):
    if resp is None:
        return "frame=no closed=%s" % ("yes" if closed else "no")
    code = unzigzag(one(resp, 2))
    msg = one(resp, 3, b"").decode(errors="replace")
    outs = []
    for o in resp.get(6, []):
        d = decode(o)
        c = unzigzag(one(d, 1))
        outs.append("%s:%s" % (NAMES.get(c, "OK" if c == 0 else str(c)),
                               one(d, 2, b"").decode(errors="replace")))
    return "frame=yes rid=%d code=%d name=%s message=%r outcomes=%r closed=%s" % (
        resp["rid"], code, NAMES.get(code, "OK" if code == 0 else str(code)), msg, outs,
        "yes" if closed else "no")

def exchange(addr, data, wait_close=True):
    s = connect(addr)
    s.sendall(data)
    resp, closed = read_reply(s, wait_close)
    s.close()
    return resp, closed

def call(addr, msg):
    """A well-formed request; the decoded response (raises if none)."""
    resp, _ = exchange(addr, frame(msg, rid=1), wait_close=False)
    if resp is None:
        raise RuntimeError("no answer from %s" % addr)
    return resp

def head(addr):
    h = decode(one(call(addr, ctl_request(OP_HEAD)), 7, b""))
    return {"leaves": one(h, 3), "height": one(h, 4), "sealed": one(h, 5)}

def node_keys(addr):
    return {one(d, 2): one(d, 3, b"") for d in map(decode, call(addr, ctl_request(OP_GET_NODES)).get(10, []))}

def block_cosigners(addr, height):
    blk = decode(one(call(addr, ctl_request(OP_GET_BLOCK, height=height)), 9, b""))
    return sorted(one(decode(c), 1) for c in blk.get(4, []))

# ---- cases ----

def valid_head():
    return ctl_request(OP_HEAD)

def case_garbage(addr):
    data = os.urandom(4096)
    while data[:4] == b"MSDF":
        data = os.urandom(4096)
    return exchange(addr, data)

def case_truncated(addr):
    s = connect(addr)
    s.sendall(frame(valid_head())[:12])
    s.close()
    return None, True

def case_badmagic(addr):
    return exchange(addr, frame(valid_head(), magic=0x4D534447))

def case_badversion(addr):
    return exchange(addr, frame(valid_head(), version=2))

def case_badkind(addr):
    return exchange(addr, frame(valid_head(), kind=3, rid=28))

def case_responsekind(addr):
    return exchange(addr, frame(valid_head(), kind=2, rid=29))

def case_reserved(addr):
    return exchange(addr, frame(valid_head(), reserved=1, rid=30))

def case_msglen(addr):  # a header announcing 64 KiB + 1 of message, and nothing after it
    return exchange(addr, header(MSG_MAX + 1, rid=11))

def case_payloadlen(addr):  # control requests carry no payload
    msg = valid_head()
    return exchange(addr, header(len(msg), payload_len=16, rid=12) + msg + b"x" * 16)

def case_undecodable(addr):
    return exchange(addr, frame(b"\xff" * 16, rid=13))

def case_reqversion(addr):
    return exchange(addr, frame(ctl_request(OP_HEAD, version=2), rid=14))

def case_unknownop(addr):
    """An unknown op, then HEAD on the same connection: the connection
    should survive (the frame itself was sound)."""
    s = connect(addr)
    s.sendall(frame(ctl_request(99), rid=15))
    resp, closed = read_reply(s, wait_close=False)
    second = None
    if not closed:
        s.sendall(frame(valid_head(), rid=16))
        second, closed = read_reply(s, wait_close=False)
    s.close()
    line = describe(resp, closed)
    return line + " then_head=%s" % ("yes" if second is not None and 7 in second else "no")

def case_emptysubmit(addr):
    return exchange(addr, frame(ctl_request(OP_SUBMIT), rid=17), wait_close=False)

def case_badrid(addr):
    return exchange(addr, frame(ctl_request(OP_SUBMIT, [put_object("anchors", "k", rid=b"12345")]),
                                rid=18), wait_close=False)

def case_putunknown(addr):
    return exchange(addr, frame(ctl_request(OP_SUBMIT, [put_object("no-such-bucket", "k1")]), rid=19),
                    wait_close=False)

def case_dupjoin(addr, node_id, auth):
    """A NodeJoin for an existing member's id with a fresh key."""
    return exchange(addr, frame(submit_auth([node_join(int(node_id), os.urandom(32))], auth),
                                rid=20), wait_close=False)

def case_stolenkey(addr, node_id, new_id, auth):
    """A new id claiming an existing member's public key."""
    key = node_keys(addr)[int(node_id)]
    return exchange(addr, frame(submit_auth([node_join(int(new_id), key)], auth), rid=21),
                    wait_close=False)

def case_newjoin(addr, new_id, auth):
    """A new voter with a fresh key: what the FSM would take, if the
    control port let it through."""
    return exchange(addr, frame(submit_auth([node_join(int(new_id), os.urandom(32))], auth),
                                rid=31), wait_close=False)

def case_nodestate(addr, node_id, status, auth):
    """A NodeState for NODE_ID (STATUS: NodeStatus number, 4 = OUT)."""
    return exchange(addr, frame(submit_auth([node_state(int(node_id), int(status))], auth), rid=33),
                    wait_close=False)

def case_mixedjoin(addr, new_id, bucket):
    """A PutObject and an untagged NodeJoin in one SUBMIT: the whole
    submit must be refused, the PutObject too."""
    cmds = [put_object(bucket, "mixedjoin"), node_join(int(new_id), os.urandom(32))]
    return exchange(addr, frame(submit_auth(cmds, "none"), rid=32), wait_close=False)

def case_cosign_unknown(addr, node_id):
    h = head(addr)["height"]
    return exchange(addr, frame(ctl_request(OP_SUBMIT, [cosign(h, int(node_id), os.urandom(64))]),
                                rid=22), wait_close=False)

def case_cosign_forged(addr, height, node_id):
    return exchange(addr, frame(ctl_request(OP_SUBMIT, [cosign(int(height), int(node_id),
                                                               os.urandom(64))]), rid=23),
                    wait_close=False)

def case_cutblock(addr):
    """A client-made CutBlock for the next height that disagrees with the
    state: only the leader's own tick may cut a block (applied, this one
    would raise the divergence alarm on every node)."""
    h = head(addr)
    return exchange(addr, frame(ctl_request(OP_SUBMIT, [cut_block(h["height"] + 1, 0, 1)]), rid=24),
                    wait_close=False)

def case_head(addr):
    return exchange(addr, frame(valid_head(), rid=25), wait_close=False)

def case_slowloris(addr, count, medshard):
    """COUNT connections each send half a header and stay idle; meanwhile
    `medshard chain head` on a fresh connection must answer. Prints how
    many idle connections the node still held open and how long the
    normal client took."""
    idle = []
    for _ in range(int(count)):
        s = connect(addr)
        s.sendall(header(10)[:12])
        idle.append(s)
    time.sleep(0.5)
    t0 = time.time()
    p = subprocess.run([medshard, "chain", "head", "--node", addr, "--json"], capture_output=True,
                       timeout=30)
    ms = (time.time() - t0) * 1000
    still_open = 0
    for s in idle:
        s.setblocking(False)
        try:
            still_open += s.recv(1) != b""
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    for s in idle:
        s.close()
    return "served=%s ms=%d idle_open=%d" % ("yes" if p.returncode == 0 and b'"head"' in p.stdout
                                             else "no", ms, still_open)

def case_maxmsg(addr):
    """A HEAD request whose message is exactly the 64 KiB bound (a long,
    ignored bucket field): must be served like any other."""
    msg = fv(1, 1) + fv(2, OP_HEAD)
    msg += fb(4, "a" * (MSG_MAX - len(msg) - 4))
    assert len(msg) == MSG_MAX
    return exchange(addr, frame(msg, rid=26), wait_close=False)

def case_pipeline(addr, count):
    """COUNT HEAD requests in one write; every answer must come back, in
    order, with its request id."""
    s = connect(addr)
    s.sendall(b"".join(frame(valid_head(), rid=1000 + i) for i in range(int(count))))
    rids = []
    for _ in range(int(count)):
        resp, closed = read_reply(s, wait_close=False)
        if resp is None:
            break
        rids.append(resp["rid"])
    s.close()
    return "answers=%d in_order=%s" % (len(rids), "yes" if rids == [1000 + i for i in
                                                                   range(len(rids))] else "no")

def case_pipeclose(addr, count):
    """COUNT HEAD requests in one write, then close without reading: the
    node's answers hit a closed socket (EPIPE). It must shrug that off."""
    s = connect(addr)
    s.sendall(b"".join(frame(valid_head(), rid=2000 + i) for i in range(int(count))))
    s.close()
    return "sent=%s" % count

def case_getbucket(addr, name):
    return exchange(addr, frame(fv(1, 1) + fv(2, 8) + fb(4, name), rid=27), wait_close=False)

def case_state(addr):
    """What bad input must not change: head fields but `applied` (a
    rejection is recorded as an applied entry), and the cluster map."""
    h = decode(one(call(addr, ctl_request(OP_HEAD)), 7, b""))
    keys = node_keys(addr)
    return "leaves=%d height=%d head=%s epoch=%d voters=%d alarm=%r nodes=%s" % (
        one(h, 3), one(h, 4), one(h, 6, b"").hex()[:16], one(h, 8), one(h, 9),
        one(h, 10, b"").decode(), ",".join("%d:%s" % (k, keys[k].hex()[:8]) for k in sorted(keys)))

def case_cosigners(addr, height):
    return "cosigners=%s" % ",".join(map(str, block_cosigners(addr, int(height))))

CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}

def main():
    if len(sys.argv) < 3 or sys.argv[2] not in CASES:
        sys.exit("usage: ctl_raw.py HOST:PORT CASE [ARGS...]; cases: " + " ".join(sorted(CASES)))
    r = CASES[sys.argv[2]](sys.argv[1], *sys.argv[3:])
    print(r if isinstance(r, str) else describe(*r))

if __name__ == "__main__":
    main()
