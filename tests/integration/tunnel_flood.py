#!/usr/bin/env python3
"""Opens many TCP connections to a tunnel port and never says a word on them,
as a stranger on the network could, then watches which ones the server
closes.

usage: tunnel_flood.py HOST PORT N SRC_PREFIX PER_SRC [--rss-pid PID --rss-limit-mb M]

Connection i comes from SRC_PREFIX.(1 + i // PER_SRC) (an address of the
loopback range, so many sources are possible on one host). Prints
  open K            once K connections are established (all of them, or as
                    many as the RSS limit allowed: then also "stopped ...")
  closed K T_MS     each time the number the server closed grows (T_MS since
                    the last connection was opened)
and runs until SIGTERM (600 s at most). With --rss-pid it stops opening once
that process's VmRSS passes the limit (checked every 50 connections), so a
build that spends megabytes per connection cannot exhaust the machine."""
import os
import selectors
import signal
import socket
import sys
import time


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    host, port, n, prefix, per_src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    rss_pid = rss_limit = None
    args = sys.argv[6:]
    while args:
        if args[0] == "--rss-pid":
            rss_pid = int(args[1])
        elif args[0] == "--rss-limit-mb":
            rss_limit = float(args[1])
        args = args[2:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        if rss_pid and rss_limit and i % 50 == 0 and i and rss_mb(rss_pid) > rss_limit:
            print(f"stopped at {i}: VmRSS over {rss_limit:.0f} MiB", flush=True)
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((f"{prefix}.{1 + i // per_src}", 0))
        s.settimeout(5)
        try:
            s.connect((host, port))
        except OSError as e:
            print(f"connect {i}: {e}", flush=True)
            s.close()
            break
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ)
    t0 = time.monotonic()
    print(f"open {len(socks)}", flush=True)
    closed = 0
    deadline = t0 + 600  # bounded even if nobody stops us
    while time.monotonic() < deadline:
        grew = False
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            try:
                data = s.recv(4096)  # a GOAWAY, then EOF; or a reset
                if data:
                    continue
            except OSError:
                pass
            sel.unregister(s)
            s.close()
            closed += 1
            grew = True
        if grew:
            print(f"closed {closed} {int((time.monotonic() - t0) * 1000)}", flush=True)


if __name__ == "__main__":
    main()
