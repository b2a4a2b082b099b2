#!/usr/bin/env python3
"""Manifests for bench/run sync (see bench/README.md, "Control plane").

  synctool.py services DIR N FILES
      N Services (default/svc-<i>, cluster IP in 10.96.0.0/12, port 80)
      each with an Endpoints of 10 addresses (10.200.0.0/13), spread over
      FILES JSON List files in DIR.
  synctool.py probe DIR TMPDIR FIRST COUNT INTERVAL_MS
      Writes the probe Service default/probe COUNT times, sequence numbers
      FIRST.., INTERVAL_MS apart: each version is written to TMPDIR (same
      file system) and renamed into DIR. Its annotations carry the sequence
      number and the CLOCK_REALTIME microseconds taken just before the
      rename, which emsync subtracts from each arrival.
  synctool.py churn DIR TMPDIR RATE SECS
      RATE Endpoints changes per second for SECS seconds: every 100 ms one
      file of RATE/10 Endpoints (default/churn-<i>, their Services in a file
      of their own, written first) is rewritten with every address moved,
      in turn over 10 such files. Prints "churn: <changes> changes in <s> s".
  synctool.py bench DIR PORT ADDR...
      The Service default/bench (cluster IP 10.96.0.50, port 80 -> PORT)
      and its Endpoints (ADDR..., nodeName bench-node) in DIR/bench.json.
"""
import json
import os
import sys
import time


def cluster_ip(i):
    # 10.96.0.0/12 has room for a million; skip .0 of the range.
    a = 10 * 2**24 + 96 * 2**16 + 1 + i
    return ".".join(str((a >> s) & 255) for s in (24, 16, 8, 0))


def ep_ip(n):
    a = 10 * 2**24 + 200 * 2**16 + 1 + n
    return ".".join(str((a >> s) & 255) for s in (24, 16, 8, 0))


def services(d, n, files):
    per = (n + files - 1) // files
    for f in range(files):
        items = []
        for i in range(f * per, min(n, (f + 1) * per)):
            name = "svc-%d" % i
            items.append({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"clusterIP": cluster_ip(i), "type": "ClusterIP",
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                    "targetPort": 8080}]}})
            items.append({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": "default"},
                "subsets": [{
                    "addresses": [{"ip": ep_ip(i * 10 + k), "nodeName": "node-%d" % (k % 4)}
                                  for k in range(10)],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]})
        with open(os.path.join(d, "services-%03d.json" % f), "w") as fh:
            json.dump({"apiVersion": "v1", "kind": "List", "items": items}, fh,
                      separators=(",", ":"))


def probe_text(seq, written_us):
    return json.dumps({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "probe", "namespace": "default",
                     "annotations": {"bench.edgemesh.io/seq": str(seq),
                                     "bench.edgemesh.io/written-us": str(written_us)}},
        "spec": {"clusterIP": "10.96.255.254", "type": "ClusterIP",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                            "targetPort": 8080}]}}, separators=(",", ":"))


def probe(d, tmp, first, count, interval_ms):
    dst = os.path.join(d, "probe.json")
    src = os.path.join(tmp, "probe.json")
    nxt = time.monotonic()
    for seq in range(first, first + count):
        now = time.monotonic()
        if now < nxt:
            time.sleep(nxt - now)
        nxt += interval_ms / 1000.0
        # The stamp is taken just before the write and rename of a few
        # hundred bytes: tens of microseconds before the rename itself.
        stamp = time.time_ns() // 1000
        with open(src, "w") as fh:
            fh.write(probe_text(seq, stamp))
        os.rename(src, dst)


def churn_endpoints(i, shift):
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "churn-%d" % i, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ep_ip(500000 + (i * 4 + k + shift) % 400000),
                                        "nodeName": "node-%d" % k} for k in range(4)],
                         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}


def write_list(d, tmp, name, items):
    src = os.path.join(tmp, name)
    with open(src, "w") as fh:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, fh,
                  separators=(",", ":"))
    os.rename(src, os.path.join(d, name))


def churn(d, tmp, rate, secs):
    per = max(1, rate // 10)
    files = 10
    svcs = [{"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "churn-%d" % i, "namespace": "default"},
             "spec": {"clusterIP": cluster_ip(200000 + i), "type": "ClusterIP",
                      "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                 "targetPort": 8080}]}} for i in range(per * files)]
    write_list(d, tmp, "churn-svc.json", svcs)
    for f in range(files):
        write_list(d, tmp, "churn-%02d.json" % f,
                   [churn_endpoints(f * per + j, 0) for j in range(per)])
    time.sleep(1)
    t0 = nxt = time.monotonic()
    changes = tick = 0
    while time.monotonic() - t0 < secs:
        now = time.monotonic()
        if now < nxt:
            time.sleep(nxt - now)
        nxt += 0.1
        tick += 1
        f = tick % files
        write_list(d, tmp, "churn-%02d.json" % f,
                   [churn_endpoints(f * per + j, tick) for j in range(per)])
        changes += per
    print("churn: %d changes in %.2f s" % (changes, time.monotonic() - t0))


def bench(d, port, addrs):
    items = [{"apiVersion": "v1", "kind": "Service",
              "metadata": {"name": "bench", "namespace": "default"},
              "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.50",
                       "ports": [{"name": "bench", "protocol": "TCP", "port": 80,
                                  "targetPort": port}]}},
             {"apiVersion": "v1", "kind": "Endpoints",
              "metadata": {"name": "bench", "namespace": "default"},
              "subsets": [{"addresses": [{"ip": a, "nodeName": "bench-node"} for a in addrs],
                           "ports": [{"name": "bench", "port": port, "protocol": "TCP"}]}]}]
    with open(os.path.join(d, "bench.json"), "w") as fh:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, fh)


def main(argv):
    if len(argv) == 5 and argv[1] == "services":
        services(argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) == 7 and argv[1] == "probe":
        probe(argv[2], argv[3], int(argv[4]), int(argv[5]), float(argv[6]))
    elif len(argv) == 6 and argv[1] == "churn":
        churn(argv[2], argv[3], int(argv[4]), float(argv[5]))
    elif len(argv) >= 5 and argv[1] == "bench":
        bench(argv[2], int(argv[3]), argv[4:])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
