#!/usr/bin/env python3
"""A raw data-port client for tests: frames and DataRequests by hand.

usage: data_raw.py HOST:PORT [--oid HEX] [--index N]
           stat | put N | get N | delete | garbage | list LIMIT [CURSOR_HEX [INDEX]]
`put N` writes N deterministic bytes as shard (object 0x5a * 16, index 1,
unless --oid/--index name another) in 1 MiB appends and seals it with their
XXH3-128 (python3-xxhash); `get N` reads them back in 1 MiB reads and
compares. `list` asks for one SHARD_LIST page (docs/FORMATS.md "Data
plane") and prints "code=... n=... seq=... more=..." then one line per
entry: object id (hex), index, size, seq."""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ctl_raw import NAMES, decode, fb, fv, one, unzigzag  # noqa: E402

MAGIC = 0x4D534446
OID = b"\x5a" * 16
OPS = {"open": 1, "append": 2, "seal": 3, "abort": 4, "read": 5, "delete": 6, "stat": 7,
       "list": 12}
INDEX = 1


def frame(msg, payload=b"", rid=1):
    return struct.pack(">IBBHQII", MAGIC, 1, 1, 0, rid, len(msg), len(payload)) + msg + payload


def request(op, offset=0, length=0, digest=b""):
    m = fv(1, 1) + fv(2, OPS[op]) + fb(3, OID) + fv(4, INDEX)
    if offset:
        m += fv(5, offset)
    if length:
        m += fv(6, length)
    if digest:
        m += fb(7, digest)
    return m


def recv_all(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise EOFError
        out += b
    return out


def call(s, msg, payload=b""):
    s.sendall(frame(msg, payload))
    hdr = recv_all(s, 24)
    _, _, _, _, _, mlen, plen = struct.unpack(">IBBHQII", hdr)
    body = recv_all(s, mlen + plen)
    d = decode(body[:mlen])
    code = unzigzag(one(d, 2))
    return code, d, body[mlen:]


def data(n):
    return bytes((i * 7 + (i >> 11)) & 0xFF for i in range(n))


def list_page(s, limit, cursor=b"", index=0):
    """One SHARD_LIST page: (code, fields, entries as (oid hex, index, size, seq))."""
    m = fv(1, 1) + fv(2, OPS["list"])
    if cursor:
        m += fb(3, cursor)
    if index:
        m += fv(4, index)
    if limit:
        m += fv(6, limit)
    code, d, page = call(s, m)
    entries = []
    if code == 0:
        ver, _, rec, n = struct.unpack(">BBHI", page[:8])
        assert ver == 1 and rec == 40 and len(page) == 8 + 40 * n, "bad page"
        for i in range(n):
            r = page[8 + 40 * i:48 + 40 * i]
            idx, _, size, seq = struct.unpack(">IIQQ", r[16:])
            entries.append((r[:16].hex(), idx, size, seq))
    return code, d, entries


def main():
    global OID, INDEX
    args = sys.argv[1:]
    while len(args) > 2 and args[1] in ("--oid", "--index"):
        if args[1] == "--oid":
            OID = bytes.fromhex(args[2])
        else:
            INDEX = int(args[2])
        del args[1:3]
    host, port = args[0].rsplit(":", 1)
    sys.argv = [sys.argv[0]] + args
    s = socket.create_connection((host, int(port)), timeout=10)
    what = sys.argv[2]
    if what == "list":
        cursor = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else b""
        index = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        code, d, entries = list_page(s, int(sys.argv[3]), cursor, index)
        print("code=%s n=%d seq=%d more=%d" % (NAMES.get(code, code), len(entries), one(d, 9),
                                               one(d, 10)))
        for e in entries:
            print("%s %d %d %d" % e)
    elif what == "delete":
        code, _, _ = call(s, request("delete"))
        print("code=%s" % NAMES.get(code, code))
    elif what == "stat":
        code, d, _ = call(s, request("stat"))
        print("code=%s size=%d" % (NAMES.get(code, code), one(d, 4)))
    elif what == "put":
        n = int(sys.argv[3])
        body = data(n)
        code, _, _ = call(s, request("open"))
        off = 0
        while code == 0 and off < n:
            chunk = body[off:off + (1 << 20)]
            code, _, _ = call(s, request("append", offset=off), chunk)
            off += len(chunk)
        import xxhash  # python3-xxhash; canonical digest = big-endian, as the node's
        h = xxhash.xxh3_128(body).digest()
        code, d, _ = call(s, request("seal", digest=h))
        print("sealed size=%d code=%s" % (one(d, 4), NAMES.get(code, code)) if code == 0
              else "seal failed code=%s" % NAMES.get(code, code))
    elif what == "get":
        n = int(sys.argv[3])
        got = b""
        while len(got) < n:
            code, _, payload = call(s, request("read", offset=len(got), length=1 << 20))
            if code != 0 or not payload:
                print("read failed code=%s at %d" % (NAMES.get(code, code), len(got)))
                return
            got += payload
        print("match" if got == data(n) else "MISMATCH")
    elif what == "garbage":
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 100)
        try:
            print("closed" if s.recv(100) == b"" else "answered")
        except ConnectionResetError:
            print("closed")


if __name__ == "__main__":
    main()
