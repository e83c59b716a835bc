#!/usr/bin/env python3
"""bench/storage, Plinth's side: hot-plug latency of a volume into a running guest through
Plinth's API, measured the way bench/storage/peers.py measures libvirt and bare QEMU.

Given a running `plinth up` (its URL, operator token file, CA and data directory: its
local agent keeps guests and the volume pool there), it creates a project, an unencrypted volume type (the peers'
files are plain qcow2) and one running test guest whose user-data prints
`BENCH-SEEN <serial>` / `BENCH-GONE <serial>` as disks come and go (the peers' watcher),
then for each iteration:

  - creates a 1 GiB volume and waits for it to be `available` (timed: volume create),
  - t0; `POST /v1/volumes/{id}/attach`; waits for `BENCH-SEEN <serial>` in the guest's
    console log file on the host (polled every 5 ms) -> attach latency,
  - t1; `POST /v1/volumes/{id}/detach`; waits for the attachment to be `detached`
    (`GET /v1/volume-attachments/{id}` every 5 ms: the host reported the guest released
    the disk after `DEVICE_DELETED`) -> detach latency,
  - deletes the volume (not timed);

then, per size (1 GiB, 100 GiB, 1 TiB, and an encrypted 1 GiB volume), attaches a volume,
(encrypted) waits, untimed, for its host to have made the volume's next layer ahead, as for
a volume in use a while, and times `POST /v1/snapshots` until the snapshot is `available` (its host
took that layer live and reported it).

Prints one JSON object on stdout (same keys as peers.py, plus create_ms); progress on
stderr. Every wait has a deadline; stdlib only.
"""

import argparse
import json
import os
import ssl
import sys
import time
import glob
import http.client
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import SNAPSHOT_GIB  # noqa: E402 - the peers' sizes
from peers import USER_DATA as WATCHER  # noqa: E402 - the peers' own watcher, unchanged


def say(*a):
    print("bench/storage (plinth):", *a, file=sys.stderr, flush=True)


class Api:
    """One kept-alive HTTPS connection, as an SDK or the CLI's client keeps: a call's
    figure holds the call, not a TLS handshake (the QMP floor, too, keeps its socket)."""

    def __init__(self, url, token_file, ca):
        u = urllib.parse.urlsplit(url)
        with open(token_file) as f:
            self.token = f.read().strip()
        ctx = ssl.create_default_context(cafile=ca) if u.scheme == "https" else None
        if ctx:
            self.new = lambda: http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)
        else:
            self.new = lambda: http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.conn = self.new()

    def call(self, method, path, body=None, ok=(200, 201, 202, 204)):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": "Bearer " + self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text, status = r.read(), r.status
                break
            except (http.client.HTTPException, OSError):
                # The server closed the kept connection: once more on a new one.
                self.conn.close()
                self.conn = self.new()
                if attempt:
                    raise
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {text[:400]!r}")
        return json.loads(text) if text else None


def wait(what, deadline_s, f, every=0.005):
    end = time.monotonic() + deadline_s
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def pct(xs, p):
    s = sorted(xs)
    k = max(0, min(len(s) - 1, -(-len(s) * p // 100) - 1))
    return s[int(k)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the server (plinth up's address)")
    ap.add_argument("--token-file", required=True, help="the operator token's file")
    ap.add_argument("--ca", required=True, help="the server's CA (plinth up: DATA/tls/ca.pem)")
    ap.add_argument("--data", required=True, help="plinth up's --data-dir (its agent keeps guests there)")
    ap.add_argument("--image", default="test-guest", help="the test-guest image's name")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--snapshot-iterations", type=int, default=3)
    a = ap.parse_args()
    api = Api(a.url, a.token_file, a.ca)

    vt = api.call("POST", "/v1/volume-types", {"name": "bench-plain", "encrypted": False, "wipe": "overwrite"})
    ten = api.call("POST", "/v1/tenants", {"name": "bench"})
    proj = api.call("POST", "/v1/projects", {"tenant_id": ten["id"], "name": "bench"})
    api.call("POST", "/v1/shapes", {"name": "bench-tiny", "vcpus": 1, "memory_mib": 256, "disk_gib": 1}, ok=(201, 409))
    made = api.call("POST", "/v1/instances", {
        "project_id": proj["id"], "name": "bench-vm", "shape": "bench-tiny", "image": a.image,
        "user_data": WATCHER,
    })
    iid = made["instance"]["id"]
    wait("the guest to run", 180, lambda: api.call("GET", f"/v1/instances/{iid}")["state"] == "running", 0.2)

    def console_file():
        found = glob.glob(os.path.join(a.data, "agent", "hosts", "*", "qemu", iid, "console.log"))
        return found[0] if found else None

    console = wait("the guest's console log on the host", 60, console_file, 0.1)
    wait("the guest's watcher to start", 180, lambda: b"PLINTH-USERDATA" in open(console, "rb").read(), 0.1)
    say(f"guest {iid} runs; console {console}")

    def seen(serial):
        needle = f"BENCH-SEEN {serial}".encode()
        return lambda: needle in open(console, "rb").read()

    def gone(serial):
        needle = f"BENCH-GONE {serial}".encode()
        return lambda: needle in open(console, "rb").read()

    create_ms, attach_ms, detach_ms = [], [], []
    for i in range(a.iterations):
        t = time.monotonic()
        v = api.call("POST", "/v1/volumes", {"project_id": proj["id"], "name": f"b{i}", "size_gib": 1,
                                              "volume_type_id": vt["id"], "instance_id": iid})
        vid = v["id"]
        wait("the volume", 60, lambda: api.call("GET", f"/v1/volumes/{vid}")["state"] == "available")
        create_ms.append((time.monotonic() - t) * 1000)

        t0 = time.monotonic()
        att = api.call("POST", f"/v1/volumes/{vid}/attach", {"instance_id": iid})
        wait(f"the guest to see {v['serial']}", 60, seen(v["serial"]))
        attach_ms.append((time.monotonic() - t0) * 1000)

        t1 = time.monotonic()
        api.call("POST", f"/v1/volumes/{vid}/detach", {})
        wait("the detach", 60,
             lambda: api.call("GET", f"/v1/volume-attachments/{att['id']}")["state"] == "detached")
        detach_ms.append((time.monotonic() - t1) * 1000)
        wait("the guest to lose the disk", 60, gone(v["serial"]))
        api.call("DELETE", f"/v1/volumes/{vid}")
        say(f"{i + 1}/{a.iterations}: create {create_ms[-1]:.0f} ms, attach {attach_ms[-1]:.0f} ms, "
            f"detach {detach_ms[-1]:.0f} ms")

    # Snapshots of an attached volume, live, at 1 GiB, 100 GiB and 1 TiB (sparse), and of an
    # encrypted 1 GiB one (Plinth's default type: the new layer is LUKS too).
    snapshot_ms = {}
    enc = api.call("POST", "/v1/volume-types", {"name": "bench-encrypted"})
    sizes = [(str(g), g, vt["id"]) for g in SNAPSHOT_GIB] + [("1-encrypted", 1, enc["id"])]
    n = a.iterations
    for label, gib, type_id in sizes:
        for k in range(a.snapshot_iterations):
            v = api.call("POST", "/v1/volumes", {"project_id": proj["id"], "name": f"b{n}", "size_gib": gib,
                                                  "volume_type_id": type_id, "instance_id": iid})
            n += 1
            vid = v["id"]
            wait("the volume", 60, lambda: api.call("GET", f"/v1/volumes/{vid}")["state"] == "available")
            att = api.call("POST", f"/v1/volumes/{vid}/attach", {"instance_id": iid})
            wait(f"the guest to see {v['serial']}", 60, seen(v["serial"]))
            # As for an encrypted volume in use a while: its host has made its next layer
            # ahead (about 2 s after it became available). An unencrypted one has none.
            spare = os.path.join(a.data, "agent", "hosts", "*", "volumes", f"{vid}.next.qcow2")
            if type_id == enc["id"]:
                wait("the volume's next layer, made ahead", 60, lambda: glob.glob(spare), 0.05)
            t0 = time.monotonic()
            s = api.call("POST", "/v1/snapshots", {"volume_id": vid, "name": "bench"})
            wait("the snapshot", 60, lambda: api.call("GET", f"/v1/snapshots/{s['id']}")["state"] == "available")
            snapshot_ms.setdefault(label, []).append((time.monotonic() - t0) * 1000)
            api.call("POST", f"/v1/volumes/{vid}/detach", {})
            wait("the detach", 60,
                 lambda: api.call("GET", f"/v1/volume-attachments/{att['id']}")["state"] == "detached")
            wait("the guest to lose the disk", 60, gone(v["serial"]))
            api.call("DELETE", f"/v1/volumes/{vid}")
            say(f"snapshot of {label} GiB #{k}: {snapshot_ms[label][-1]:.0f} ms")

    api.call("DELETE", f"/v1/instances/{iid}")
    print(json.dumps({
        "peer": "plinth", "iterations": a.iterations,
        "create_ms": create_ms, "attach_ms": attach_ms, "detach_ms": detach_ms,
        "create_p50": pct(create_ms, 50), "create_p99": pct(create_ms, 99),
        "attach_p50": pct(attach_ms, 50), "attach_p99": pct(attach_ms, 99),
        "detach_p50": pct(detach_ms, 50), "detach_p99": pct(detach_ms, 99),
        "snapshot_ms": snapshot_ms, "snapshot_p50": {g: pct(v, 50) for g, v in snapshot_ms.items()},
    }))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - one clear line, non-zero exit
        say(f"error: {e}")
        sys.exit(1)
