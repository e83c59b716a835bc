"""Drives standalone OpenStack Placement with the benchmark dataset (dataset.py).

Run with the peer venv's python (standard library only):

    $PEER_DIR/venv/bin/python bench/placement/peer/drive.py --hosts 1000

1. Load: N compute hosts as root resource providers (flat model: no nested NUMA or GPU
   providers), each with VCPU / PCPU / MEMORY_MB / DISK_GB / CUSTOM_GPU_* inventory,
   traits and one shared aggregate. 4 requests per host (POST provider, PUT inventories,
   PUT traits, PUT aggregates), each carrying the generation returned by the previous.
   --load-threads hosts in parallel (default 1 on SQLite, which has one writer, 4 on
   PostgreSQL). When host 0 .. N-1 already exist (and host N does not), loading is
   skipped and "reused": true is reported (their allocations stay).
2. Place: request k = 0, 1, 2, … (dataset.request, or the lines of --requests-file) from
   --concurrency threads, one keep-alive HTTP/1.1 connection each. One decision =
   GET /allocation_candidates?resources=…&required=…&limit=5, then
   PUT /allocations/{fresh uuid} with the first candidate (consumer_generation null,
   consumer_type INSTANCE, microversion latest = 1.39); on 409 (or 5xx) the next
   candidate; when all candidates fail, the query is repeated up to 3 times in all.
   No candidate = a refusal. Stops at --max-decisions, at the --seconds budget (no new
   decision starts after it), or when full: every flavor of the stream has been refused
   (capacity only shrinks, so a refused flavor stays refused).
3. Prints progress lines prefixed `bench/placement/peer:` and, last, one JSON object:
   decisions = placed + refused + failed (every request answered), decisions_per_s =
   decisions / wall seconds of the placing phase, p50_ms / p99_ms = nearest-rank
   latency of a whole decision (a_c plus PUT(s)).
"""

import argparse
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402

PREFIX = "bench/placement/peer:"
HEADERS = {
    "x-auth-token": "admin",
    "openstack-api-version": "placement latest",
    "accept": "application/json",
    "content-type": "application/json",
}


def say(msg):
    sys.stdout.write("%s %s\n" % (PREFIX, msg))
    sys.stdout.flush()


def die(msg):
    sys.stderr.write("%s error: %s\n" % (PREFIX, msg))
    sys.exit(1)


def peer_version():
    try:
        from importlib.metadata import version

        return "openstack-placement " + version("openstack-placement")
    except Exception:  # not run from the venv
        return "openstack-placement 16.0.0"


class HTTPError(Exception):
    pass


class Client:
    """One keep-alive connection (reopened when the server closes it; gunicorn's sync
    workers answer `Connection: close`)."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.conn = None

    def call(self, method, path, body=None, microversion=None):
        data = None if body is None else json.dumps(body).encode()
        headers = HEADERS
        if microversion:
            headers = dict(HEADERS, **{"openstack-api-version": "placement " + microversion})
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A kept-alive connection the server had already closed: reconnect.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.will_close:
                self.conn.close()
                self.conn = None
            doc = None
            if raw:
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = raw.decode(errors="replace")
            return resp.status, doc
        raise AssertionError("unreachable")

    def ok(self, method, path, body=None, expect=(200, 201, 204), retries=5):
        """A call that must succeed; 5xx (SQLite 'database is locked') is retried."""
        for attempt in range(retries):
            status, doc = self.call(method, path, body)
            if status in expect:
                return doc
            if status >= 500 and attempt + 1 < retries:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise HTTPError("%s %s -> %d %s" % (method, path, status, str(doc)[:300]))


# --- loading --------------------------------------------------------------------------


def load_host(c, i):
    h = dataset.host(i)
    u = h["uuid"]
    rp = c.ok("POST", "/resource_providers", {"name": h["name"], "uuid": u}, expect=(200,))
    gen = rp["generation"]
    doc = c.ok(
        "PUT",
        "/resource_providers/%s/inventories" % u,
        {"resource_provider_generation": gen, "inventories": dataset.placement_inventories(h)},
        expect=(200,),
    )
    gen = doc["resource_provider_generation"]
    doc = c.ok(
        "PUT",
        "/resource_providers/%s/traits" % u,
        {"resource_provider_generation": gen, "traits": dataset.placement_traits(h)},
        expect=(200,),
    )
    gen = doc["resource_provider_generation"]
    c.ok(
        "PUT",
        "/resource_providers/%s/aggregates" % u,
        {"resource_provider_generation": gen, "aggregates": [dataset.AGGREGATE_UUID]},
        expect=(200,),
    )


def load(url, n, threads):
    c = Client(url)
    for rc in dataset.custom_resource_classes():
        c.ok("PUT", "/resource_classes/" + rc, expect=(201, 204))
    for t in dataset.custom_traits():
        c.ok("PUT", "/traits/" + t, expect=(201, 204))
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "error": None}
    t0 = time.monotonic()

    def worker():
        cl = Client(url)
        while True:
            with lock:
                if state["error"] or state["next"] >= n:
                    return
                i = state["next"]
                state["next"] += 1
            try:
                load_host(cl, i)
            except Exception as e:  # noqa: BLE001
                with lock:
                    state["error"] = state["error"] or "host %d: %s" % (i, e)
                return
            with lock:
                state["done"] += 1
                done = state["done"]
            if done % 1000 == 0 and done < n:
                say("loaded %d/%d hosts (%.1f s)" % (done, n, time.monotonic() - t0))

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if state["error"]:
        die("loading failed: " + state["error"])
    return time.monotonic() - t0


# --- placing --------------------------------------------------------------------------


def percentile(sorted_ms, p):
    if not sorted_ms:
        return None
    idx = max(0, math.ceil(p / 100.0 * len(sorted_ms)) - 1)
    return round(sorted_ms[idx], 2)


def place(url, requests, max_decisions, seconds, concurrency, limit, project, user):
    """requests: a callable k -> request dict or None (end of stream)."""
    flavors = set(requests.flavors)
    lock = threading.Lock()
    st = {
        "next": 0,
        "placed": 0,
        "refused": 0,
        "failed": 0,
        "conflicts": 0,
        "errors": 0,
        "first_errors": [],
        "refused_flavors": set(),
        "lat": [],
        "ac": [],
        "put": [],
        "by_flavor": {},
        "used": {},
        "stopped": None,
        "fatal": None,
    }
    t0 = time.monotonic()
    deadline = t0 + seconds

    def take():
        with lock:
            if st["stopped"]:
                return None
            if st["next"] >= max_decisions:
                st["stopped"] = "max-decisions"
                return None
            if time.monotonic() >= deadline:
                st["stopped"] = "seconds"
                return None
            if flavors and st["refused_flavors"] >= flavors:
                st["stopped"] = "full"
                return None
            r = requests.get(st["next"])
            if r is None:
                st["stopped"] = "requests-file"
                return None
            st["next"] += 1
            return r

    def decide(c, r):
        resources, required = dataset.placement_query(r)
        q = {"resources": resources, "limit": str(limit)}
        if required:
            q["required"] = required
        path = "/allocation_candidates?" + urllib.parse.urlencode(q, safe=":,")
        consumer = str(uuid.uuid4())
        conflicts = errors = 0
        ac_ms = put_ms = 0.0
        for _round in range(3):
            ta = time.monotonic()
            status, doc = c.call("GET", path)
            ac_ms += (time.monotonic() - ta) * 1000
            if status != 200:
                errors += 1
                note_error("GET a_c -> %d %s" % (status, str(doc)[:200]))
                continue
            cands = doc["allocation_requests"]
            if not cands:
                return "refused", None, conflicts, errors, ac_ms, put_ms
            for cand in cands:
                body = {
                    "allocations": cand["allocations"],
                    "consumer_generation": None,
                    "project_id": project,
                    "user_id": user,
                    "consumer_type": "INSTANCE",
                }
                tp = time.monotonic()
                status, doc = c.call("PUT", "/allocations/" + consumer, body)
                put_ms += (time.monotonic() - tp) * 1000
                if status == 204:
                    return "placed", cand["allocations"], conflicts, errors, ac_ms, put_ms
                if status == 409:
                    conflicts += 1
                else:
                    errors += 1
                    note_error("PUT allocations -> %d %s" % (status, str(doc)[:200]))
        return "failed", None, conflicts, errors, ac_ms, put_ms

    def note_error(msg):
        with lock:
            if len(st["first_errors"]) < 5:
                st["first_errors"].append(msg)

    def worker():
        c = Client(url)
        while True:
            r = take()
            if r is None:
                return
            ts = time.monotonic()
            try:
                outcome, allocs, conflicts, errors, ac_ms, put_ms = decide(c, r)
            except Exception as e:  # noqa: BLE001 - transport failure: stop the run
                with lock:
                    st["fatal"] = st["fatal"] or "request %d: %r" % (r["k"], e)
                    st["stopped"] = "error"
                return
            ms = (time.monotonic() - ts) * 1000
            with lock:
                st[outcome] += 1
                st["conflicts"] += conflicts
                st["errors"] += errors
                st["lat"].append(ms)
                st["ac"].append(ac_ms)
                if put_ms:
                    st["put"].append(put_ms)
                bf = st["by_flavor"].setdefault(r["flavor"], {"placed": 0, "refused": 0, "failed": 0})
                bf[outcome] += 1
                if outcome == "refused":
                    st["refused_flavors"].add(r["flavor"])
                if allocs:
                    for rp in allocs.values():
                        for rc, amount in rp["resources"].items():
                            st["used"][rc] = st["used"].get(rc, 0) + amount
                done = st["placed"] + st["refused"] + st["failed"]
            if done % 1000 == 0:
                say("%d decisions (%.1f s)" % (done, time.monotonic() - t0))

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    st["seconds"] = time.monotonic() - t0
    return st


class GeneratedRequests:
    flavors = sorted(set(dataset.FLAVORS))

    def get(self, k):
        return dataset.request(k)


class FileRequests:
    """JSON lines as printed by `dataset.py requests COUNT` (fields k, flavor, vcpus,
    pcpus, memory_mib, disk_gib, gpus, required_traits)."""

    def __init__(self, path):
        self.items = []
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    self.items.append(json.loads(line))
        self.flavors = sorted({r["flavor"] for r in self.items})

    def get(self, k):
        return self.items[k] if k < len(self.items) else None


def db_kind(arg):
    if arg:
        return arg
    url = os.environ.get("PLACEMENT_DB", "")
    if url.startswith("postgresql"):
        return "postgresql"
    if url.startswith("sqlite"):
        return "sqlite"
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:%s" % os.environ.get("PORT", "8778"))
    ap.add_argument("--hosts", type=int, required=True)
    ap.add_argument("--requests-file")
    ap.add_argument("--max-decisions", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--limit", type=int, default=5, help="a_c limit (default 5)")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], help="default: from $PLACEMENT_DB")
    ap.add_argument("--load-threads", type=int, help="default 1 on SQLite, 4 on PostgreSQL")
    ap.add_argument("--load-only", action="store_true", help="load, then stop before placing")
    args = ap.parse_args()

    db = db_kind(args.db)
    load_threads = args.load_threads or (4 if db == "postgresql" else 1)
    c = Client(args.url)
    try:
        status, doc = c.call("GET", "/")
    except OSError as e:
        die("no Placement at %s: %s" % (args.url, e))
    if status != 200:
        die("GET / -> %d" % status)
    say("peer %s at %s, microversion %s, db %s" % (peer_version(), args.url, doc["versions"][0]["max_version"], db))
    say("machine: %d cpus, load average %.2f (other work on the machine skews every figure)"
        % (os.cpu_count() or 0, os.getloadavg()[0]))
    say("inventory model: flat (one root resource provider per host with VCPU/PCPU/MEMORY_MB/"
        "DISK_GB/CUSTOM_GPU_* inventory; no nested NUMA or GPU providers)")

    first, _ = c.call("GET", "/resource_providers/" + dataset.host_uuid(0))
    reused = False
    if first == 200:
        last, _ = c.call("GET", "/resource_providers/" + dataset.host_uuid(args.hosts - 1))
        beyond, _ = c.call("GET", "/resource_providers/" + dataset.host_uuid(args.hosts))
        if last == 200 and beyond == 404:
            reused = True
        else:
            die("the database holds a different inventory; start from an empty database")
    if reused:
        load_seconds = 0.0
        say("hosts 0..%d already loaded: reusing them (and their allocations)" % (args.hosts - 1))
    else:
        say("loading %d hosts with %d thread(s)" % (args.hosts, load_threads))
        load_seconds = load(args.url, args.hosts, load_threads)
        say("loaded %d hosts in %.1f s (%.2f ms/host)" % (args.hosts, load_seconds, load_seconds * 1000 / args.hosts))
        # The aggregate is each host's last write: N members = every host complete.
        status, doc = c.call("GET", "/resource_providers?member_of=" + dataset.AGGREGATE_UUID)
        members = len(doc["resource_providers"]) if status == 200 else -1
        if members != args.hosts:
            die("after loading, %d providers are in the aggregate, not %d" % (members, args.hosts))

    result = {
        "peer": peer_version(),
        "hosts": args.hosts,
        "db": db,
        "model": "flat",
        "load_seconds": round(load_seconds, 2),
        "load_threads": load_threads,
        "reused": reused,
    }
    if args.load_only:
        print(json.dumps(result))
        return

    requests = FileRequests(args.requests_file) if args.requests_file else GeneratedRequests()
    project = str(uuid.uuid4())
    user = str(uuid.uuid4())
    say("placing: concurrency %d, at most %d decisions or %.0f s" % (args.concurrency, args.max_decisions, args.seconds))
    st = place(args.url, requests, args.max_decisions, args.seconds, args.concurrency, args.limit, project, user)
    if st["fatal"]:
        die("placing failed: " + st["fatal"])
    for e in st["first_errors"]:
        say("error: " + e)

    # Cross-check: Placement's usage totals for this run's project = what was placed.
    # Asked at microversion 1.37: at 1.38+ (usages per consumer type) 16.0.0 answers 500
    # on PostgreSQL (GroupingError: allocations.resource_class_id not in GROUP BY).
    status, doc = c.call("GET", "/usages?project_id=" + project, microversion="1.37")
    usages = (doc or {}).get("usages", {}) if status == 200 else {"error": status}
    usage_ok = {k: v for k, v in usages.items() if v} == {k: v for k, v in st["used"].items() if v}
    if not usage_ok:
        say("WARNING: usages %s != placed %s" % (usages, st["used"]))

    say("load average after placing: %.2f" % os.getloadavg()[0])
    lat = sorted(st["lat"])
    decisions = st["placed"] + st["refused"] + st["failed"]
    secs = st["seconds"]
    for fl in sorted(st["by_flavor"]):
        b = st["by_flavor"][fl]
        say("  %-9s placed %6d  refused %6d  failed %d" % (fl, b["placed"], b["refused"], b["failed"]))
    result.update(
        {
            "decisions": decisions,
            "placed": st["placed"],
            "refused": st["refused"],
            "failed": st["failed"],
            "conflicts": st["conflicts"],
            "errors": st["errors"],
            "seconds": round(secs, 2),
            "decisions_per_s": round(decisions / secs, 1) if secs > 0 else None,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "ac_p50_ms": percentile(sorted(st["ac"]), 50),
            "put_p50_ms": percentile(sorted(st["put"]), 50),
            "concurrency": args.concurrency,
            "stopped": st["stopped"],
            "usage_check": usage_ok,
        }
    )
    # Key order: the fields the caller parses first.
    order = ["peer", "hosts", "decisions", "refused", "seconds", "decisions_per_s", "p50_ms", "p99_ms",
             "load_seconds", "db"]
    out = {k: result[k] for k in order}
    out.update({k: v for k, v in result.items() if k not in out})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
