#!/usr/bin/env python3
"""HTTP framing peers for test_http_framing.sh.

  framing.py backend IP PORT LOG   HTTP/1.1 server; appends every request
                                   line it parses to LOG; prints "ready".
  framing.py client IP PORT CASE   runs one client case against a proxy;
                                   exit 0 when it behaved, else 1 with the
                                   reason on stderr.

Backend paths:
  /early...      answers 401 as soon as the head is in and reads no more on
                 that connection (its receive buffer is small): the rest of
                 that body is never parsed here, so a request line in it
                 reaches the log only if the proxy sent it as a request of
                 its own.
  /continue      "100 Continue" and the 200 in one write.
  /hints         two "103 Early Hints" and the 200 in one write.
  /continue-big  "100 Continue" and a 200 with a 30000-byte body in one write.
  anything else  200 with body "ok <path>\\n"; the body of the request (by
                 Content-Length) is read first.

Client cases: get, small-cl, large-cl, chunked, expect, bad-second, upload,
errpage, continue, hints, continue-big (see each function)."""
import select
import socket
import sys
import threading

TIMEOUT = 5.0
LOG_LOCK = threading.Lock()
BIG = 30000


def log_line(path, line):
    with LOG_LOCK:
        with open(path, "a") as f:
            f.write(line + "\n")


# ---- backend ----------------------------------------------------------------

def read_head(conn, buf):
    """Reads until a full head is in <buf>; returns (head, rest) or None."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def early_close(conn):
    """Reads nothing more and closes once the proxy has closed its end (10 s
    at most): with the small receive buffer, an upload stalls at once, so
    the proxy meets the answer well before the end of the body."""
    try:
        conn.shutdown(socket.SHUT_WR)
        p = select.poll()
        p.register(conn, select.POLLRDHUP)
        p.poll(10000)
    except OSError:
        pass


def serve(conn, logpath):
    conn.settimeout(15)
    buf = b""
    try:
        for _ in range(1000):
            r = read_head(conn, buf)
            if r is None:
                return
            head, buf = r
            lines = head.decode("latin-1").split("\r\n")
            while lines and lines[0] == "":
                lines.pop(0)
            reqline = lines[0]
            log_line(logpath, reqline)
            parts = reqline.split(" ")
            path = parts[1] if len(parts) > 1 else ""
            clen = 0
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                if k.strip().lower() == "content-length":
                    clen = int(v.strip())
            if path.startswith("/early"):
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\n\r\n"
                             b"unauthorized\n")
                early_close(conn)
                return
            while len(buf) < clen:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[clen:]
            if path == "/continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nok /continue\n")
            elif path == "/hints":
                conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                             b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok /hints\n")
            elif path == "/continue-big":
                body = bytes(48 + i % 10 for i in range(BIG))
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + body)
            else:
                body = ("ok %s\n" % path).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    finally:
        conn.close()


def backend(ip, port, logpath):
    open(logpath, "a").close()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    srv.bind((ip, port))
    srv.listen(128)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, logpath), daemon=True).start()


# ---- client -----------------------------------------------------------------

class Fail(Exception):
    pass


class Conn:
    def __init__(self, ip, port):
        self.s = socket.create_connection((ip, port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def fill(self, what):
        try:
            chunk = self.s.recv(65536)
        except socket.timeout:
            raise Fail("timed out waiting for %s (have %r)" % (what, self.buf[:200]))
        except ConnectionResetError:
            raise Fail("connection reset waiting for %s (have %r)" % (what, self.buf[:200]))
        if not chunk:
            raise Fail("EOF waiting for %s (have %r)" % (what, self.buf[:200]))
        self.buf += chunk

    def response(self):
        """One response: (status, head text, body); body by Content-Length."""
        while b"\r\n\r\n" not in self.buf:
            self.fill("a response head")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        text = head.decode("latin-1")
        try:
            status = int(text.split(" ", 2)[1])
        except (IndexError, ValueError):
            raise Fail("not a response head: %r" % text[:200])
        clen = 0
        for ln in text.split("\r\n")[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                clen = int(v.strip())
        if status < 200:
            clen = 0
        while len(self.buf) < clen:
            self.fill("a response body")
        body, self.buf = self.buf[:clen], self.buf[clen:]
        return status, text, body

    def expect_eof(self):
        """Nothing more, then a clean EOF (no reset, within TIMEOUT)."""
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except socket.timeout:
            raise Fail("no EOF within %.0f s" % TIMEOUT)
        except ConnectionResetError:
            raise Fail("connection reset instead of EOF (after %r)" % self.buf[:200])
        if self.buf:
            raise Fail("bytes after the response: %r" % self.buf[:200])


def smuggle(tag):
    return ("GET /smuggled-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag).encode()


def expect(resp, status, body=None):
    st, head, b = resp
    if st != status or (body is not None and b != body):
        raise Fail("expected %d %r, got %d %r / %r" % (status, body, st, head[:80], b[:80]))


def early_401(c, head, first):
    c.send(head + first)
    expect(c.response(), 401, b"unauthorized\n")


def case_small_cl(ip, port, tag):
    """The rest of a Content-Length body, sent after the 401, holds a request
    line: it must be dropped and the connection stay usable."""
    c = Conn(ip, port)
    rest = smuggle(tag)
    first = b"0123456789"
    early_401(c, b"POST /early-%s HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n"
              % (tag.encode(), len(first) + len(rest)), first)
    c.send(rest)
    c.send(b"GET /after-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag.encode())
    expect(c.response(), 200, b"ok /after-%s\n" % tag.encode())


def case_large_cl(ip, port, tag):
    """1 MiB left of the body after the 401: the client is closed without a
    reset and the rest (a request line first) is never forwarded."""
    c = Conn(ip, port)
    first = b"0123456789"
    rest = smuggle(tag) + b"x" * (1 << 20)
    early_401(c, b"POST /early-%s HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n"
              % (tag.encode(), len(first) + len(rest)), first)
    try:
        c.send(rest)
        c.s.shutdown(socket.SHUT_WR)
    except OSError as e:
        raise Fail("sending the rest of the body: %s" % e)
    c.expect_eof()


def case_chunked(ip, port, tag):
    """As small-cl with a chunked body: the first chunk's data ends with a
    request line sent after the 401."""
    c = Conn(ip, port)
    rest = smuggle(tag)
    first = b"0123456789"
    early_401(c, b"POST /early-%s HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
              % tag.encode(), b"%x\r\n" % (len(first) + len(rest)) + first)
    c.send(rest + b"\r\n0\r\n\r\n")
    c.send(b"GET /after-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag.encode())
    expect(c.response(), 200, b"ok /after-%s\n" % tag.encode())


def case_expect(ip, port, tag):
    """A request with "Expect: 100-continue" answered 401 without a 100: the
    client may never send the body, so the connection ends after the 401
    (a client that waited for it would hang on a kept connection)."""
    c = Conn(ip, port)
    c.send(b"POST /early-%s HTTP/1.1\r\nHost: web\r\nContent-Length: 1000\r\n"
           b"Expect: 100-continue\r\n\r\n" % tag.encode())
    expect(c.response(), 401, b"unauthorized\n")
    c.expect_eof()


def case_bad_second(ip, port, tag):
    """A malformed request after a good one on a kept connection: the 400
    page arrives whole, then EOF (no reset)."""
    c = Conn(ip, port)
    c.send(b"GET /first-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag.encode())
    expect(c.response(), 200, b"ok /first-%s\n" % tag.encode())
    c.send(b"GET /bad HTTP/1.1\r\nHost: web\r\nContent-Length: 1\r\n"
           b"Content-Length: 2\r\n\r\n")
    expect(c.response(), 400)
    c.expect_eof()


def pushed_upload(ip, port, path, status, body):
    """Head and a 6 MiB body written at once, then a half-close, not waiting
    for the answer: the answer arrives whole and then EOF, without a reset.
    (The body is more than the sockets on the way to the backend hold, and
    less than what the proxy drops after its answer, 8 MiB. Whether the
    proxy then closed its end is for the caller to see in its counters.)"""
    n = 6 << 20
    # Built before connecting: a client silent for timeouts.sniff_ms would
    # be taken for a server-speaks-first protocol.
    data = (b"POST %s HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), n) + b"x" * n)
    c = Conn(ip, port)
    err = []

    def push():
        try:
            c.send(data)
            c.s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=push, daemon=True)
    t.start()
    expect(c.response(), status, body)
    c.expect_eof()
    t.join(TIMEOUT)
    if t.is_alive() or err:
        raise Fail("the upload did not complete: %s" % (err or "still writing"))


def case_upload(ip, port, tag):
    pushed_upload(ip, port, "/early-" + tag, 401, b"unauthorized\n")


def case_errpage(ip, port, tag):
    pushed_upload(ip, port, "/upload-" + tag, 503, None)


def case_continue(ip, port, tag):
    """100 and 200 in one write: both arrive, and the connection goes on."""
    c = Conn(ip, port)
    c.send(b"GET /continue HTTP/1.1\r\nHost: web\r\n\r\n")
    expect(c.response(), 100)
    expect(c.response(), 200, b"ok /continue\n")
    c.send(b"GET /after-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag.encode())
    expect(c.response(), 200, b"ok /after-%s\n" % tag.encode())


def case_hints(ip, port, tag):
    """103, 103 and 200 in one write."""
    c = Conn(ip, port)
    c.send(b"GET /hints HTTP/1.1\r\nHost: web\r\n\r\n")
    r1, r2 = c.response(), c.response()
    expect(r1, 103)
    expect(r2, 103)
    if "a.css" not in r1[1] or "b.js" not in r2[1]:
        raise Fail("103 heads out of order: %r %r" % (r1[1], r2[1]))
    expect(c.response(), 200, b"ok /hints\n")
    c.send(b"GET /after-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag.encode())
    expect(c.response(), 200, b"ok /after-%s\n" % tag.encode())


def case_continue_big(ip, port, tag):
    """100 and a 200 with a 30000-byte body in one write."""
    c = Conn(ip, port)
    c.send(b"GET /continue-big HTTP/1.1\r\nHost: web\r\n\r\n")
    expect(c.response(), 100)
    expect(c.response(), 200, bytes(48 + i % 10 for i in range(BIG)))
    c.send(b"GET /after-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag.encode())
    expect(c.response(), 200, b"ok /after-%s\n" % tag.encode())


def case_get(ip, port, tag):
    """A plain GET (to wait for a path to work)."""
    c = Conn(ip, port)
    c.send(b"GET /get-%s HTTP/1.1\r\nHost: web\r\n\r\n" % tag.encode())
    expect(c.response(), 200, b"ok /get-%s\n" % tag.encode())


CASES = {
    "get": case_get,
    "small-cl": case_small_cl,
    "large-cl": case_large_cl,
    "chunked": case_chunked,
    "expect": case_expect,
    "bad-second": case_bad_second,
    "upload": case_upload,
    "errpage": case_errpage,
    "continue": case_continue,
    "hints": case_hints,
    "continue-big": case_continue_big,
}


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "backend":
        backend(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    if len(sys.argv) in (5, 6) and sys.argv[1] == "client" and sys.argv[4] in CASES:
        tag = sys.argv[5] if len(sys.argv) == 6 else sys.argv[4]
        try:
            CASES[sys.argv[4]](sys.argv[2], int(sys.argv[3]), tag)
        except Fail as e:
            print(str(e), file=sys.stderr)
            return 1
        except OSError as e:
            print("socket error: %s" % e, file=sys.stderr)
            return 1
        return 0
    print("usage: framing.py backend IP PORT LOG | client IP PORT CASE [TAG]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
