#!/usr/bin/env python3
"""A raw data-port client for tests: frames and DataRequests by hand.

usage: data_raw.py HOST:PORT stat | put N | get N | garbage
`put N` writes N deterministic bytes as shard (object 0x5a * 16, index 1)
in 1 MiB appends and seals it with their XXH3-128 (python3-xxhash);
`get N` reads them back in 1 MiB reads and compares."""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ctl_raw import NAMES, decode, fb, fv, one, unzigzag  # noqa: E402

MAGIC = 0x4D534446
OID = b"\x5a" * 16
OPS = {"open": 1, "append": 2, "seal": 3, "abort": 4, "read": 5, "delete": 6, "stat": 7}


def frame(msg, payload=b"", rid=1):
    return struct.pack(">IBBHQII", MAGIC, 1, 1, 0, rid, len(msg), len(payload)) + msg + payload


def request(op, offset=0, length=0, digest=b""):
    m = fv(1, 1) + fv(2, OPS[op]) + fb(3, OID) + fv(4, 1)
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


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    what = sys.argv[2]
    if what == "stat":
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
