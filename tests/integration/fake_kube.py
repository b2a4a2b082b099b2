#!/usr/bin/env python3
"""A fake Kubernetes API server for tests/integration/test_kube.sh (stdlib
only). It serves LIST (limit/continue paging) and WATCH (chunked, one JSON
event per line, bookmarks, 410 Gone as a status or an ERROR event) for the
seven kinds edgemesh watches (KubeEdge's
RuleEndpoints and Rules among them), over http or https, with an optional bearer
token, and records every request it answers.

The test drives it through a plain-HTTP control port (POST, query strings):
  /upsert?kind=K[&silent=1]       body: the object; ADDED or MODIFIED event
                                  (silent: the state changes, no event: as
                                  if the event was compacted away)
  /delete?kind=K&ns=NS&name=N[&silent=1]
  /bookmark?kind=K                a BOOKMARK at the current resourceVersion
  /compact?as=status|event        watches from before now get 410
  /cut?kind=K[&mid=1]             close open watches of K (mid: after half
                                  of the next event)
  /slow?on=1|0                    events trickle out a few bytes at a time
  /token?value=T                  the bearer token required ("" none)
  /requests                       the requests answered, one JSON per line
  /rv                             the current resourceVersion
"""
import argparse
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATHS = {
    "/api/v1/services": ("services", "Service", "v1"),
    "/api/v1/endpoints": ("endpoints", "Endpoints", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("endpointslices", "EndpointSlice",
                                                 "discovery.k8s.io/v1"),
    "/api/v1/pods": ("pods", "Pod", "v1"),
    "/api/v1/nodes": ("nodes", "Node", "v1"),
    "/apis/rules.kubeedge.io/v1/ruleendpoints": ("ruleendpoints", "RuleEndpoint",
                                                 "rules.kubeedge.io/v1"),
    "/apis/rules.kubeedge.io/v1/rules": ("rules", "Rule", "rules.kubeedge.io/v1"),
}
KINDS = {v[0]: (v[1], v[2]) for v in PATHS.values()}


class State:
    def __init__(self):
        self.cv = threading.Condition()
        self.rv = 100
        self.objects = {k: {} for k in KINDS}  # kind -> key -> object
        self.events = []  # (rv, kind, event dict)
        self.compacted = 0  # watches from an rv below this get 410
        self.gone_as = "status"
        self.cut = {k: 0 for k in KINDS}
        self.cut_mid = False
        self.slow = False
        self.token = ""
        self.requests = []

    def key(self, obj):
        md = obj.get("metadata", {})
        return (md.get("namespace") or "") + "/" + md.get("name", "")

    def change(self, kind, etype, obj, silent):
        with self.cv:
            self.rv += 1
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            k = self.key(obj)
            if etype == "DELETED":
                obj = self.objects[kind].pop(k, obj)
                obj["metadata"]["resourceVersion"] = str(self.rv)
            else:
                etype = "MODIFIED" if k in self.objects[kind] else "ADDED"
                self.objects[kind][k] = obj
            if not silent:
                kd, av = KINDS[kind]
                full = dict(obj, kind=kd, apiVersion=av)
                self.events.append((self.rv, kind, {"type": etype, "object": full}))
            self.cv.notify_all()
            return self.rv


S = State()


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("api: " + (fmt % args) + "\n")

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        with S.cv:
            S.requests.append({"path": u.path, "query": q,
                               "auth": self.headers.get("Authorization", "")})
        if u.path not in PATHS:
            return self.send_json(404, status(404, "NotFound", "no such path"))
        if S.token and self.headers.get("Authorization") != "Bearer " + S.token:
            return self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        kind = PATHS[u.path][0]
        if q.get("watch") in ("1", "true"):
            return self.watch(kind, q)
        return self.list(kind, q)

    def list(self, kind, q):
        limit = int(q.get("limit", "0") or 0)
        cont = q.get("continue", "")
        with S.cv:
            if cont:
                off, rv = (int(x) for x in cont.split(":"))
            else:
                off, rv = 0, S.rv
            keys = sorted(S.objects[kind])
            end = len(keys) if not limit else min(len(keys), off + limit)
            items = [S.objects[kind][k] for k in keys[off:end]]
        md = {"resourceVersion": str(rv)}
        if end < len(keys):
            md["continue"] = "%d:%d" % (end, rv)
        kd, av = KINDS[kind]
        self.send_json(200, {"kind": kd + "List", "apiVersion": av, "metadata": md,
                             "items": items})

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def write_event(self, ev):
        line = (json.dumps(ev) + "\n").encode()
        if S.slow:
            for i in range(0, len(line), 3):
                self.chunk(line[i:i + 3])
                time.sleep(0.004)
        else:
            self.chunk(line)

    def watch(self, kind, q):
        rv = int(q.get("resourceVersion", "0") or 0)
        timeout = float(q.get("timeoutSeconds", "300"))
        with S.cv:
            gone = rv < S.compacted
            gone_as = S.gone_as
        if gone and gone_as == "status":
            return self.send_json(410, status(410, "Expired",
                                              "too old resource version: %d" % rv))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        if gone:
            self.write_event({"type": "ERROR", "object": status(
                410, "Expired", "too old resource version: %d" % rv)})
            self.chunk(b"")
            return
        end = time.monotonic() + timeout
        with S.cv:
            cut0 = S.cut[kind]
        sent = rv
        while True:
            with S.cv:
                pending = [e for e in S.events if e[0] > sent and e[1] == kind]
                cut = S.cut[kind] != cut0
                mid = S.cut_mid
                # A cut inside an event waits for the event to cut.
                if not pending and not (cut and not mid):
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    S.cv.wait(min(left, 0.5))
                    continue
            if cut and not (mid and pending):
                self.close_hard()
                return
            for erv, _, ev in pending:
                if cut and mid:
                    line = (json.dumps(ev) + "\n").encode()
                    self.chunk(line[: len(line) // 2])
                    with S.cv:
                        S.cut_mid = False
                    self.close_hard()
                    return
                self.write_event(ev)
                sent = max(sent, erv)
        self.chunk(b"")

    def close_hard(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Control(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("control: " + (fmt % args) + "\n")

    def reply(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        n = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(n) if n else b""
        silent = q.get("silent") == "1"
        op = u.path.strip("/")
        if op == "upsert":
            return self.reply(str(S.change(q["kind"], "ADDED", json.loads(body), silent)))
        if op == "delete":
            obj = {"metadata": {"name": q["name"]}}
            if q.get("ns"):
                obj["metadata"]["namespace"] = q["ns"]
            return self.reply(str(S.change(q["kind"], "DELETED", obj, silent)))
        with S.cv:
            if op == "bookmark":
                kd, av = KINDS[q["kind"]]
                S.rv += 1
                S.events.append((S.rv, q["kind"], {"type": "BOOKMARK", "object": {
                    "kind": kd, "apiVersion": av,
                    "metadata": {"resourceVersion": str(S.rv)}}}))
                S.cv.notify_all()
                return self.reply(str(S.rv))
            if op == "compact":
                S.compacted = S.rv
                S.gone_as = q.get("as", "status")
                S.events = []
                return self.reply(str(S.compacted))
            if op == "cut":
                S.cut[q["kind"]] += 1
                S.cut_mid = q.get("mid") == "1"
                S.cv.notify_all()
                return self.reply("ok")
            if op == "slow":
                S.slow = q.get("on") == "1"
                return self.reply("ok")
            if op == "token":
                S.token = q.get("value", "")
                return self.reply("ok")
            if op == "requests":
                return self.reply("".join(json.dumps(r) + "\n" for r in S.requests))
            if op == "rv":
                return self.reply(str(S.rv))
        self.send_error(404)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="ip:port of the API")
    ap.add_argument("--control", required=True, help="ip:port of the control port")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--token", default="")
    ap.add_argument("--state", help="JSON {kind: [objects]} to start with")
    ap.add_argument("--bulk-pods", type=int, default=0,
                    help="this many more pods (bulk/p<i>), for paged lists")
    a = ap.parse_args()
    S.token = a.token
    if a.state:
        with open(a.state) as f:
            for kind, objs in json.load(f).items():
                for o in objs:
                    S.change(kind, "ADDED", o, True)
    for i in range(a.bulk_pods):
        S.change("pods", "ADDED", {"metadata": {"name": "p%d" % i, "namespace": "bulk"},
                                   "spec": {"nodeName": "edge-1"},
                                   "status": {"podIP": "10.1.%d.%d" % (i // 250, i % 250 + 1)}},
                 True)
    host, port = a.listen.rsplit(":", 1)
    api = ThreadingHTTPServer((host, int(port)), Api)
    api.daemon_threads = True
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        api.socket = ctx.wrap_socket(api.socket, server_side=True)
    chost, cport = a.control.rsplit(":", 1)
    ctl = ThreadingHTTPServer((chost, int(cport)), Control)
    ctl.daemon_threads = True
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    print("ready", flush=True)
    api.serve_forever()


if __name__ == "__main__":
    main()
