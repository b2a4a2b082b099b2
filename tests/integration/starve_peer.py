"""Peers of test_starve.sh (edgemesh must not let one connection or stream
starve the others).

  sink PORT              accepts on 127.0.0.1:PORT and never reads
  source PORT            accepts and writes as fast as each peer takes it
  stall PORT N MODE      opens N connections to 127.0.0.1:PORT: MODE "push"
                         writes until the kernel refuses more, "idle" sends
                         one line; neither ever reads. Prints "stalled N".
  probe PORT COUNT SECS  COUNT HTTP GETs, each on a new connection, each
                         given SECS; prints "probe worst_ms=W failed=F"
  tunnel ...             a tunnel peer (see tunnel_main)
  tlspeer HOST PORT KEY NAME CA CERT CERTKEY SERVER
                         a tunnel peer over TLS 1.3 with that certificate,
                         saying it is NAME (see tlspeer_main)
  names HOST PORT KEY PID N
                         a tunnel peer opening N streams to made-up nodes
                         (see names_main)

Every command but probe and tunnel runs until killed; "ready" or "stalled"
on stdout says it is set up."""
import errno
import fcntl
import hashlib
import hmac
import os
import selectors
import socket
import struct
import sys
import termios
import threading
import time


def listener(port, rcvbuf=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    return s


def sink_main(port):
    ls = listener(port, 4096)
    print("ready", flush=True)
    held = []
    while True:
        c, _ = ls.accept()
        held.append(c)  # never read


def source_main(port):
    ls = listener(port)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    chunk = bytes(range(256)) * 256
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is ls:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    continue
                # Small send buffers, here and in stall_main: the kernel's
                # TCP memory is the host's, shared with every other test.
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
                c.setblocking(False)
                sel.register(c, selectors.EVENT_WRITE)
                continue
            try:
                key.fileobj.send(chunk)
            except BlockingIOError:
                pass
            except OSError:
                sel.unregister(key.fileobj)
                key.fileobj.close()


def stall_main(port, n, mode):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    chunk = b"x" * 65536
    if mode == "idle":
        for s in socks:
            s.send(b"stall\n")
        # The source's bytes fill these sockets, then edgemesh's: wait
        # until every socket has bytes waiting and their sum stops moving
        # for a second (bounded).
        last, since = -1, time.monotonic()
        deadline = since + 20
        while time.monotonic() < deadline:
            inq = [struct.unpack("i", fcntl.ioctl(s, termios.FIONREAD, b"\0" * 4))[0]
                   for s in socks]
            total = sum(inq)
            now = time.monotonic()
            if total != last or min(inq) == 0:
                last, since = total, now
            elif now - since > 1.0:
                break
            time.sleep(0.05)
    else:
        # Push until a whole round moves nothing for a second (bounded).
        quiet_since = time.monotonic()
        deadline = quiet_since + 20
        while time.monotonic() < deadline:
            moved = 0
            for s in socks:
                try:
                    moved += s.send(chunk)
                except (BlockingIOError, InterruptedError):
                    pass
            now = time.monotonic()
            if moved:
                quiet_since = now
            elif now - quiet_since > 1.0:
                break
            else:
                time.sleep(0.01)
    print("stalled %d" % n, flush=True)
    while True:
        time.sleep(3600)


def http_get(port, secs):
    """Returns (ms, status line or error word)."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=secs)
        s.settimeout(secs)
        s.sendall(b"GET /probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        s.close()
        line = got.split(b"\r\n", 1)[0].decode("latin-1") if got else "eof"
        return (time.monotonic() - t0) * 1000, line
    except socket.timeout:
        return (time.monotonic() - t0) * 1000, "timeout"
    except OSError as e:
        gone = (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE)
        return (time.monotonic() - t0) * 1000, "reset" if e.errno in gone else str(e)


def probe_main(port, count, secs):
    worst, failed = 0.0, 0
    for _ in range(count):
        ms, line = http_get(port, secs)
        worst = max(worst, ms)
        if not line.startswith("HTTP/1.1 200"):
            failed += 1
            print("probe: %s after %.0f ms" % (line, ms), flush=True)
            break  # one is enough: the next would wait as long
    print("probe worst_ms=%.0f failed=%d" % (worst, failed), flush=True)


# ---- tunnel peer ------------------------------------------------------------

HDR = struct.Struct(">BBHII")
DATA, WINDOW, PING, GOAWAY, OPEN, RST, HELLO, AUTH = range(8)


def frame(ftype, sid, payload=b"", flags=0):
    return HDR.pack(1, ftype, flags, sid, len(payload)) + payload


def open_frame(sid, ns, svc, port):
    fixed = struct.pack(">BBHHBBB3x16s", 1, 0, port, 0, 0, len(ns), len(svc), b"")
    return frame(OPEN, sid, fixed + ns.encode() + svc.encode())


class Peer:
    """Dialer side of one tunnel: handshake, then a reader thread answering
    PINGs and collecting DATA, RST and GOAWAY per stream."""

    def __init__(self, port, key, name, host="127.0.0.1", wrap=None):
        self.s = socket.create_connection((host, port), timeout=10)
        if wrap:
            self.s = wrap(self.s)
        self.lock = threading.Lock()
        self.data = {}
        self.rst = {}
        self.goaway = None
        nonce = os.urandom(32)
        hello = struct.pack(">BB2xIII32s", 0, len(name), 1 << 20, 65536, 100, nonce)
        self.s.sendall(frame(HELLO, 0, hello + name.encode()))
        ftype, _, _, payload = self.read_frame()
        if ftype != HELLO:
            raise SystemExit("tunnel: expected HELLO, got type %d" % ftype)
        nlen = payload[1]
        their_nonce = payload[16:48]
        their_name = payload[48:48 + nlen]
        msg = (b"em-tunnel-v1" + bytes([0]) + nonce + their_nonce + bytes([len(name)]) +
               name.encode() + bytes([len(their_name)]) + their_name)
        self.s.sendall(frame(AUTH, 0, hmac.new(key.encode(), msg, hashlib.sha256).digest()))
        ftype, _, _, payload = self.read_frame()
        if ftype != AUTH:
            raise SystemExit("tunnel: handshake refused (type %d %r)" % (ftype, payload))
        self.s.settimeout(None)
        threading.Thread(target=self.reader, daemon=True).start()

    def read_exact(self, n):
        b = b""
        while len(b) < n:
            k = self.s.recv(n - len(b))
            if not k:
                raise EOFError
            b += k
        return b

    def read_frame(self):
        _, ftype, flags, sid, length = HDR.unpack(self.read_exact(HDR.size))
        return ftype, flags, sid, self.read_exact(length) if length else b""

    def reader(self):
        try:
            while True:
                ftype, flags, sid, payload = self.read_frame()
                with self.lock:
                    if ftype == PING and not flags & 1:
                        self.s.sendall(frame(PING, 0, payload, 1))
                    elif ftype == DATA:
                        self.data[sid] = self.data.get(sid, b"") + payload
                    elif ftype == RST:
                        self.rst[sid] = payload[4:].decode("latin-1")
                    elif ftype == GOAWAY:
                        self.goaway = payload[8:].decode("latin-1")
        except (EOFError, OSError):
            with self.lock:
                if self.goaway is None:
                    self.goaway = "connection closed"

    def send(self, b):
        with self.lock:
            self.s.sendall(b)


def slow_reader(port, want, result):
    """Accepts one connection and reads <want> bytes in small sips."""
    ls = listener(port, 4096)
    c, _ = ls.accept()
    got = bytearray()
    deadline = time.monotonic() + 60
    c.settimeout(5)
    try:
        while len(got) < want and time.monotonic() < deadline:
            b = c.recv(64)
            if not b:
                break
            got += b
            time.sleep(0.002)
    except OSError:
        pass
    result.append(bytes(got))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def wait_for(cond, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def tunnel_main(tport, key, em_pid, http_port, slow_port, flood):
    """Through edgemesh's tunnel port: stream 1 sends <flood> 1-byte DATA
    frames to default/stuck (an endpoint whose connect never completes, so
    every byte stays queued); then stream 3 sends a line to default/echo and
    must get it back, an HTTP client on <http_port> (a service without
    endpoints) must get its 503 page, and stream 5 sends 20000 1-byte frames
    to default/slow (a reader taking 64 bytes per 2 ms) that must arrive
    intact. Prints one line per result."""
    rss0 = rss_kib(em_pid)
    p = Peer(tport, key, "fake-peer")
    flood_frames = b"".join(frame(DATA, 1, b"%c" % (i % 251)) for i in range(flood))
    p.send(open_frame(1, "default", "stuck", 80) + flood_frames)
    line = b"unrelated stream\n"
    p.send(open_frame(3, "default", "echo", 7) + frame(DATA, 3, line))
    ok = wait_for(lambda: p.data.get(3, b"") == line or 3 in p.rst or p.goaway, 10)
    with p.lock:
        echo = p.data.get(3, b"")
        print("flood_rst %s" % p.rst.get(1, "none"), flush=True)
        print("unrelated_stream %s" % ("ok" if ok and echo == line else
                                        "rst:" + p.rst[3] if 3 in p.rst else
                                        "got:%r" % echo), flush=True)
    ms, status = http_get(http_port, 10)
    print("unrelated_http %s (%.0f ms)" % (status, ms), flush=True)
    result = []
    t = threading.Thread(target=slow_reader, args=(slow_port, 20000, result))
    t.start()
    want = bytes(i % 251 for i in range(20000))
    p.send(open_frame(5, "default", "slow", 80) +
           b"".join(frame(DATA, 5, want[i:i + 1]) for i in range(20000)))
    t.join(70)
    got = result[0] if result else b""
    print("slow_stream %s" % ("ok 20000" if got == want else
                              "bad got=%d rst=%s" % (len(got), p.rst.get(5, "none"))),
          flush=True)
    with p.lock:
        print("resets %d goaway %s" % (len(p.rst), p.goaway or "none"), flush=True)
    print("rss_kib before=%d after=%d" % (rss0, rss_kib(em_pid)), flush=True)


def tlspeer_main(host, port, key, name, ca, cert, certkey, server):
    """Dials a tunnel port with TLS 1.3 and the given certificate, then says
    it is <name> in HELLO. Prints one line: "tls_refused <why>" when the
    TLS handshake fails, "refused <why>" when the tunnel handshake does (or
    the connection ends before AUTH), "up" when the tunnel came up."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, certkey)
    wrap = lambda s: ctx.wrap_socket(s, server_hostname=server)
    try:
        p = Peer(port, key, name, host, wrap)
    except ssl.SSLError as e:
        print("tls_refused %s" % e.__class__.__name__, flush=True)
        return
    except (SystemExit, EOFError, OSError) as e:
        print("refused %s" % (str(e) or e.__class__.__name__).replace(" ", "_"), flush=True)
        return
    # TLS 1.3: a client certificate the server refuses shows after the
    # handshake, at the first read.
    ok = wait_for(lambda: p.goaway is not None, 1.0)
    print("refused %s" % p.goaway.replace(" ", "_") if ok else "up", flush=True)


def names_main(host, port, key, em_pid, n):
    """An authenticated edge ("name-sprayer") opens <n> streams, each to a
    node name nobody has, 500 at a time; every one must be reset. Prints
    "names resets=R goaway=G rss_kib before=B after=A"."""
    rss0 = rss_kib(em_pid)
    p = Peer(port, key, "name-sprayer", host)
    sid = 1
    for start in range(0, n, 500):
        batch = []
        for _ in range(min(500, n - start)):
            node = "made-up-%s" % os.urandom(12).hex()
            fixed = struct.pack(">BBHHBBB3x16s", 1, 0, 80, 0, len(node), 7, 3, b"")
            batch.append(frame(OPEN, sid, fixed + node.encode() + b"default" + b"web"))
            sid += 2
        p.send(b"".join(batch))
        want = start + len(batch)
        wait_for(lambda: len(p.rst) >= want or p.goaway, 10)
        if p.goaway:
            break
    with p.lock:
        print("names resets=%d goaway=%s rss_kib before=%d after=%d" %
              (len(p.rst), (p.goaway or "none").replace(" ", "_"), rss0, rss_kib(em_pid)),
              flush=True)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sink":
        sink_main(int(args[0]))
    elif cmd == "source":
        source_main(int(args[0]))
    elif cmd == "stall":
        stall_main(int(args[0]), int(args[1]), args[2])
    elif cmd == "probe":
        probe_main(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "tunnel":
        tunnel_main(int(args[0]), args[1], int(args[2]), int(args[3]), int(args[4]),
                    int(args[5]))
    elif cmd == "tlspeer":
        tlspeer_main(args[0], int(args[1]), args[2], args[3], args[4], args[5], args[6],
                     args[7])
    elif cmd == "names":
        names_main(args[0], int(args[1]), args[2], int(args[3]), int(args[4]))
    else:
        raise SystemExit("unknown command " + cmd)


main()
