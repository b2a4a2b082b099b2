#!/usr/bin/env python3
"""Clients of test_fastpath.sh, each connection to HOST:PORT (a cluster IP).

  peer HOST PORT N     N connections one after another; each prints the
                       address getpeername() returns ("IP:PORT") and
                       round-trips 100 bytes to an echo backend
  spread HOST PORT N   N connections one after another to an HTTP backend
                       (embackend -m http, spoken to as raw TCP): one GET
                       each; prints "backend-K=COUNT ..." (sorted) and, on
                       a second line, "peer_ok=M" where M connections saw
                       HOST:PORT as their peer
  both HOST PORT BYTES one connection to an echo backend: BYTES of random
                       data sent while the echo is read back at the same
                       time; exit 0 when what came back equals what went

Exit status 1, with the reason on stderr, on any error. Every socket
operation has a 10 s timeout."""
import os
import re
import socket
import sys
import threading


def conn(host, port):
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(10)
    return s


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise RuntimeError("EOF after %d of %d bytes" % (len(buf), n))
        buf += b
    return bytes(buf)


def peer(host, port, n):
    for i in range(n):
        s = conn(host, port)
        ip, p = s.getpeername()[:2]
        print("%s:%d" % (ip, p), flush=True)
        msg = (b"fastpath-%06d-" % i).ljust(100, b"x")
        s.sendall(msg)
        if recv_exact(s, len(msg)) != msg:
            raise RuntimeError("echo differs on connection %d" % i)
        s.close()


def http_body(s):
    head = bytearray()
    while b"\r\n\r\n" not in head:
        b = s.recv(4096)
        if not b:
            raise RuntimeError("EOF in the response head")
        head += b
    h, _, rest = bytes(head).partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", h)
    if not h.startswith(b"HTTP/1.1 200") or not m:
        raise RuntimeError("unexpected response head %r" % h[:80])
    n = int(m.group(1))
    return rest + recv_exact(s, n - len(rest)) if n > len(rest) else rest[:n]


def spread(host, port, n):
    counts = {}
    peer_ok = 0
    for _ in range(n):
        s = conn(host, port)
        if s.getpeername()[:2] == (host, port):
            peer_ok += 1
        s.sendall(b"GET / HTTP/1.1\r\nHost: fastpath\r\n\r\n")
        body = http_body(s).decode("ascii", "replace").rstrip("\n").rstrip(".")
        s.close()
        if not re.fullmatch(r"backend-[0-9]+", body):
            raise RuntimeError("unexpected body %r" % body[:40])
        counts[body] = counts.get(body, 0) + 1
    print(" ".join("%s=%d" % (k, counts[k]) for k in sorted(counts)))
    print("peer_ok=%d" % peer_ok)


def both(host, port, total):
    data = os.urandom(total)
    s = conn(host, port)
    got = bytearray()
    err = []

    def reader():
        try:
            while len(got) < total:
                b = s.recv(65536)
                if not b:
                    raise RuntimeError("EOF after %d of %d bytes" % (len(got), total))
                got.extend(b)
        except Exception as e:  # reported by the main thread
            err.append(e)

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(data)
    t.join(60)
    s.close()
    if err:
        raise err[0]
    if bytes(got) != data:
        raise RuntimeError("%d bytes came back, not equal to the %d sent" % (len(got), total))
    print("both ways: %d bytes intact" % total)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    try:
        {"peer": peer, "spread": spread, "both": both}[mode](host, port, n)
    except Exception as e:
        print("fastpath_client %s: %s" % (mode, e), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
