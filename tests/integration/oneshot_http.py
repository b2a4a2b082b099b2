#!/usr/bin/env python3
"""HTTP/1.1 backend that answers each request and then, a moment later,
closes the connection without saying so (no "Connection: close"): a
keep-alive client that reuses the connection at once sends its next request
to a peer about to go, which reads nothing more. Usage: oneshot_http.py IP
PORT. Prints "ready" once listening; answers "n=<count>" per request."""
import socket
import sys
import time

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
print("ready", flush=True)
count = 0
while True:
    conn, _ = srv.accept()
    conn.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if b"\r\n\r\n" in data:
            count += 1
            body = ("n=%d\n" % count).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            time.sleep(0.002)
    except OSError:
        pass
    conn.close()
