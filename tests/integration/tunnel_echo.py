"""Sends N random bytes to an echo service while reading them back, then
half-closes; prints "ok <n>" when every byte came back in order, else
"bad ...". Usage: tunnel_echo.py HOST PORT BYTES."""
import os
import socket
import sys
import threading


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = os.urandom(n)
    s = socket.create_connection((host, port), timeout=60)
    err = []

    def writer():
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=writer)
    t.start()
    got = bytearray()
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
    except OSError as e:
        err.append(e)
    t.join()
    if bytes(got) == data and not err:
        print("ok %d" % n)
        return 0
    first = next((i for i in range(min(len(got), n)) if got[i] != data[i]), None)
    print("bad got=%d want=%d first_diff=%s err=%s" % (len(got), n, first, err))
    return 1


sys.exit(main())
