#!/usr/bin/env python3
"""bench/net driver: port-ready and sg-enforce against a running Plinth server and two agents
(started by bench/net/run), plus the iptables_hybrid peer for sg-enforce.

Runs inside the lab's fabric namespace (where the server listens). Guests are network
namespaces it creates; sockets are opened inside them from short-lived threads that `setns`
first (a socket stays in the namespace it was made in). Every loop is bounded in count and
time; any failure exits non-zero.
"""

import argparse
import collections
import ctypes
import errno
import fcntl
import http.client
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

CLONE_NEWNET = 0x40000000
LISTEN_PORT = 7000  # the port the probe rule opens
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


def die(msg):
    print(f"bench/net: {msg}", file=sys.stderr, flush=True)
    os._exit(1)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def ns_path(name):
    """A namespace's file: a name of /run/netns, or a path (an agent's VPC namespaces are
    mounted only in that agent's mount namespace: /proc/<agent>/root/run/netns/<name>)."""
    return name if name.startswith("/") else f"/run/netns/{name}"


def setns(name):
    fd = os.open(ns_path(name), os.O_RDONLY)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def in_ns(name, fn, *args):
    """Runs fn(*args) on a new thread that first enters namespace `name`; returns its result."""
    out = {}

    def body():
        try:
            setns(name)
            out["v"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["e"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out.get("v")


def sh(*args, inp=None):
    r = subprocess.run(args, input=inp, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"{' '.join(args[:8])}: exit {r.returncode}: {r.stderr.strip()[:500]}")
    return r.stdout


def pct(xs, p):
    """Nearest-rank percentile (xs non-empty)."""
    s = sorted(xs)
    k = max(1, -(-len(s) * p // 100))
    return s[int(k) - 1]


# ---------------------------------------------------------------------------------------------
# The API (HTTPS, trusting only the server's CA; one keep-alive connection per Api)


class Api:
    def __init__(self, url, token, ca):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.token = u.hostname, u.port, token
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.check_hostname = False  # the CA is pinned; the certificate names the address
        self.conn = None

    def call(self, method, path, body=None):
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=120)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read()
                return r.status, (json.loads(text) if text else None)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt or method != "GET":
                    raise
        raise AssertionError("unreachable")

    def ok(self, method, path, body=None):
        s, v = self.call(method, path, body)
        if not 200 <= s < 300:
            die(f"{method} {path}: {s} {json.dumps(v)[:600]}")
        return v

    def get(self, path):
        return self.ok("GET", path)

    def post(self, path, body):
        return self.ok("POST", path, body)


# ---------------------------------------------------------------------------------------------
# TCP probes from the prober guest


class Prober:
    """Connection attempts from one guest namespace: a new non-blocking connect() every 1 ms."""

    def __init__(self, ns):
        self.ns = ns

    def _run(self, dst, until, deadline, attempt_timeout):
        """Starts an attempt every 1 ms; `until(results, now)` decides when to stop, where
        results are (start, end, ok) of finished attempts, in start order of finishing.
        Pending attempts wait in an epoll set and a queue in start order, so each 1 ms step
        costs the same however many are pending (a poll over every pending socket, and a scan
        of them for timeouts, made this harness the machine's biggest CPU user while a target
        did not answer yet)."""
        ep = select.epoll()
        pending = {}  # fd -> (sock, start)
        queue = collections.deque()  # (start, fd) in start order
        results = []
        next_at = time.monotonic()

        def finish(fd, end, ok):
            s, start = pending.pop(fd)
            ep.unregister(fd)
            results.append((start, end, ok))
            s.close()

        try:
            while True:
                now = time.monotonic()
                if now > deadline:
                    return results, False
                if now >= next_at:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    err = s.connect_ex((dst, LISTEN_PORT))
                    if err == 0:
                        results.append((now, time.monotonic(), True))
                        s.close()
                    elif err == errno.EINPROGRESS:
                        pending[s.fileno()] = (s, now)
                        queue.append((now, s.fileno()))
                        ep.register(s.fileno(), select.EPOLLOUT)
                    else:
                        results.append((now, time.monotonic(), False))
                        s.close()
                    next_at = now + 0.001
                for fd, _ in ep.poll(max(0.0, next_at - time.monotonic())):
                    s, _ = pending[fd]
                    finish(fd, time.monotonic(), s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
                now = time.monotonic()
                while queue and now - queue[0][0] > attempt_timeout:
                    start, fd = queue.popleft()
                    if pending.get(fd, (None, None))[1] == start:
                        finish(fd, now, False)
                if until(results, now):
                    return results, True
        finally:
            for s, _ in pending.values():
                s.close()
            ep.close()

    def first_success(self, dst, deadline, attempt_timeout=0.5):
        """Monotonic time at which the first connect() completed, or None at the deadline."""
        seen = [0]

        def until(results, _now):
            # Only the results since the last call (each 1 ms step costs the same).
            new, seen[0] = results[seen[0]:], len(results)
            return any(ok for _, _, ok in new)

        results, done = in_ns(self.ns, self._run, dst, until, deadline, attempt_timeout)
        if not done:
            return None
        return min(end for _, end, ok in results if ok)

    def refused_since(self, dst, deadline, confirm=0.2, attempt_timeout=0.15):
        """Start time of the first attempt of the final run of failed attempts, once that run
        covers `confirm` seconds of attempts; None at the deadline."""
        st = {"seen": 0, "last_ok": float("-inf"), "fails": [], "lo": None, "hi": None}

        def until(results, _now):
            # Kept as it goes: the failures started after the last success started, and
            # their earliest and latest starts (each 1 ms step costs the same).
            new, st["seen"] = results[st["seen"]:], len(results)
            for start, _, ok in new:
                if ok and start > st["last_ok"]:
                    st["last_ok"] = start
                    st["fails"] = [f for f in st["fails"] if f > start]
                    st["lo"] = min(st["fails"], default=None)
                    st["hi"] = max(st["fails"], default=None)
                elif not ok and start > st["last_ok"]:
                    st["fails"].append(start)
                    st["lo"] = start if st["lo"] is None else min(st["lo"], start)
                    st["hi"] = start if st["hi"] is None else max(st["hi"], start)
            return st["lo"] is not None and st["hi"] - st["lo"] >= confirm

        results, done = in_ns(self.ns, self._run, dst, until, deadline, attempt_timeout)
        if not done:
            return None
        ordered = sorted(results)
        first_fail = None
        for r in reversed(ordered):
            if r[2]:
                break
            first_fail = r[0]
        return first_fail


# ---------------------------------------------------------------------------------------------
# Guests


def listener(port):
    """A non-blocking TCP listener on 0.0.0.0:`port`, in the calling thread's namespace."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1024)
    s.setblocking(False)
    return s


def drain(lock, socks, stop=None):
    """Accepts and closes every connection to the listeners in `socks` (a list other threads
    append to under `lock`), until `stop` (a threading.Event) is set."""
    poller, known = select.poll(), {}
    while stop is None or not stop.is_set():
        with lock:
            for s in socks[len(known):]:
                known[s.fileno()] = s
                poller.register(s.fileno(), select.POLLIN)
        for fd, _ in poller.poll(50):
            try:
                while True:
                    c, _ = known[fd].accept()
                    c.close()
            except OSError:
                pass


class Guests:
    """Target guest namespaces with a listener each (opened before any interface exists), and
    one accept thread that drains them all."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.socks = []
        self.lock = threading.Lock()
        threading.Thread(target=drain, args=(self.lock, self.socks), daemon=True).start()

    def make(self, name):
        """A guest namespace listening on LISTEN_PORT: {"ns": its name, "nl": a Netlink in it}."""
        ns = f"{self.prefix}g{name}"
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

        s = in_ns(ns, listener, LISTEN_PORT)
        with self.lock:
            self.socks.append(s)
        return {"ns": ns, "nl": in_ns(ns, Netlink)}


# ---------------------------------------------------------------------------------------------
# rtnetlink: the harness plugs guests with netlink messages, not `ip` processes (a process
# costs 10-30 ms on this 2-CPU machine while the server and agents work, and the plugging sits
# inside the port-ready figure; a VM's NIC would be up since boot)

NLMSG_ERROR = 2
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWNEIGH = 16, 18, 20, 28
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_NET_NS_FD = 1, 3, 28
IFA_ADDRESS, IFA_LOCAL = 1, 2
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP, NUD_PERMANENT, RTMGRP_LINK = 0x1, 0x80, 0x1


def nla(kind, data):
    n = 4 + len(data)
    return struct.pack("HH", n, kind) + data + b"\0" * (-n % 4)


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


class Netlink:
    """An rtnetlink socket; it acts in the namespace it was opened in (open it from a thread
    in that namespace: `in_ns(ns, Netlink)`). `groups`: multicast groups to listen to."""

    def __init__(self, groups=0):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.s.bind((0, groups))
        self.seq = 0

    def request(self, kind, flags, body):
        """Sends one request and answers its reply messages (without the ACK); raises on error."""
        self.seq += 1
        self.s.send(struct.pack("IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + body)
        out = []
        while True:
            data = self.s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                n, t, _, seq, _ = struct.unpack_from("IHHII", data, off)
                if seq == self.seq:
                    if t == NLMSG_ERROR:
                        err = struct.unpack_from("i", data, off + 16)[0]
                        if err:
                            raise OSError(-err, f"rtnetlink request {kind}: {os.strerror(-err)}")
                        return out
                    out.append(data[off:off + n])
                off += (n + 3) & ~3

    def index(self, name):
        reply = self.request(RTM_GETLINK, 0, struct.pack("BxHiII", 0, 0, 0, 0, 0) + nla(IFLA_IFNAME, name.encode() + b"\0"))
        return struct.unpack_from("BxHiII", reply[0], 16)[2]

    def set_link(self, index, mac=None, netns_fd=None, up=False):
        attrs = (nla(IFLA_ADDRESS, mac_bytes(mac)) if mac else b"") + (
            nla(IFLA_NET_NS_FD, struct.pack("I", netns_fd)) if netns_fd is not None else b"")
        flags = IFF_UP if up else 0
        self.request(RTM_NEWLINK, 0, struct.pack("BxHiII", 0, 0, index, flags, flags) + attrs)

    def add_addr(self, index, cidr):
        ip, plen = cidr.split("/")
        a = socket.inet_aton(ip)
        body = struct.pack("BBBBI", socket.AF_INET, int(plen), 0, 0, index) + nla(IFA_LOCAL, a) + nla(IFA_ADDRESS, a)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, body)

    def pin_neigh(self, index, ip, mac):
        """`ip neigh replace IP lladdr MAC dev … nud permanent`."""
        body = struct.pack("BxxxiHBB", socket.AF_INET, index, NUD_PERMANENT, 0, 0)
        body += nla(NDA_DST, socket.inet_aton(ip)) + nla(NDA_LLADDR, mac_bytes(mac))
        self.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)


def plug(vpc_nl, dev, guest, mac, addr, peer=None):
    """Moves the NIC's far end `{dev}g` from the VPC namespace (`vpc_nl`, a Netlink opened
    there) into the guest (a Guests entry) and configures it (no rename: the guest's
    interface keeps the name `{dev}g`). `peer` (address, MAC) is pinned in the guest's
    neighbour table, as the prober pins the target's: a veth's far end receives as soon as
    the near end joins its bridge, but transmits only once the kernel's linkwatch work has
    activated its queue (asynchronous, tens of ms on a busy machine); an ARP request sent
    before is dropped (`QDISC_DROP`) and retried only a second later, which no guest with a
    NIC up since boot would see."""
    far = f"{dev}g"
    fd = os.open(ns_path(guest["ns"]), os.O_RDONLY)
    try:
        vpc_nl.set_link(vpc_nl.index(far), mac=mac, netns_fd=fd)
    finally:
        os.close(fd)
    nl = guest["nl"]
    i = nl.index(far)
    nl.add_addr(i, addr)
    nl.set_link(i, up=True)
    if peer:
        nl.pin_neigh(i, *peer)


def wait_dev(vpc_ns, dev, deadline):
    """Waits for `dev` to appear in the VPC namespace: listens to its link events (rtnetlink)
    and looks the name up on each (no polling). True when present."""

    def wait():
        events = Netlink(RTMGRP_LINK)
        try:
            while time.monotonic() < deadline:
                try:
                    socket.if_nametoindex(dev)
                    return True
                except OSError:
                    pass
                r, _, _ = select.select([events.s], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
                if r:
                    try:
                        events.s.recv(1 << 20)
                    except OSError:  # ENOBUFS: events were lost; the lookup above decides
                        pass
            return False
        finally:
            events.s.close()

    return in_ns(vpc_ns, wait)


# ---------------------------------------------------------------------------------------------
# Taps: the harness plays QEMU's part for a NIC plugged as a tap

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def open_tap(name, deadline):
    """Opens the tap `name` in the calling thread's namespace (creating it if absent), as a
    VMM opens its NIC's tap: a non-blocking fd of Ethernet frames. An agent's tap is busy
    for the instant between its creation and its being made persistent (EBUSY): retried
    until `deadline`."""
    while True:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
            return fd
        except OSError as e:
            os.close(fd)
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.001)


class Wires:
    """What QEMU does with a NIC's tap fd, for every tap-plugged guest at once: one thread
    copies each frame read from the NIC's tap (in the VPC namespace) to the guest's own tap
    (in the guest namespace, whose kernel plays the guest OS) and back. A frame that finds
    the other side's queue full is dropped, as a NIC's would be."""

    def __init__(self):
        self.ep = select.epoll()
        self.peer = {}
        threading.Thread(target=self._run, daemon=True).start()

    def connect(self, a, b):
        self.peer[a], self.peer[b] = b, a
        self.ep.register(a, select.EPOLLIN)
        self.ep.register(b, select.EPOLLIN)

    def _run(self):
        while True:
            for fd, _ in self.ep.poll():
                to = self.peer[fd]
                for _ in range(64):
                    try:
                        frame = os.read(fd, 65536)
                    except OSError:  # EAGAIN: drained (or the device went)
                        break
                    try:
                        os.write(to, frame)
                    except OSError:
                        pass


def guest_tap(guest, mac, addr, peer):
    """The guest's NIC, up since boot as a VM's would be: a tap `eth0` in the guest namespace
    with the NIC's MAC and address, `peer` (address, MAC) pinned as in `plug`. Answers its fd."""
    fd = in_ns(guest["ns"], lambda: open_tap("eth0", time.monotonic() + 5))
    nl = guest["nl"]
    i = nl.index("eth0")
    nl.set_link(i, mac=mac, up=True)
    nl.add_addr(i, addr)
    nl.pin_neigh(i, *peer)
    return fd


# ---------------------------------------------------------------------------------------------
# Rules


def filler_rules(n):
    """n distinct ingress rules that never match the probe (tcp 7000 from the prober): rule i
    allows tcp (every port) from 10.9.0.0+2i/32 (distinct, non-adjacent, so no two merge).

    Each names a CIDR on purpose: rules from anywhere on some ports mixed with rules from
    CIDRs on others multiply in the agent's disjoint interval elements (see bench/README.md)."""
    out = []
    for i in range(n):
        a = 0x0A090000 + 2 * i  # 10.9.0.0 + 2i
        cidr = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/32"
        out.append({"direction": "ingress", "protocol": "tcp", "remote_cidr": cidr})
    return out


PROBE_RULE = {"direction": "ingress", "protocol": "tcp", "port_min": LISTEN_PORT, "port_max": LISTEN_PORT}


def probe_rule_id(group):
    for r in group["rules"]:
        if r["direction"] == "ingress" and r.get("port_min") == LISTEN_PORT and not r.get("remote_cidr"):
            return r["id"]
    die(f"no probe rule in group {group['id']}")


# ---------------------------------------------------------------------------------------------
# The iptables_hybrid peer (Neutron's iptables firewall driver)


class IptablesPeer:
    """Neutron's iptables_hybrid behaviour on the same guests: a Linux bridge in a peer "host"
    namespace with br_netfilter (`physdev` matches), per-port chains `i<port>` (ingress: the
    group's rules, one iptables rule each, then the fallback drop), `o<port>`/`s<port>`
    (egress, anti-spoofing by MAC and address), an ipset of the group's members for its
    remote-group rule; a change is `iptables-save`, rebuilding every port's chains, and
    `iptables-restore -n` of the whole filter table (iptables_manager.py)."""

    def __init__(self, prefix):
        self.ns = f"{prefix}pa"
        self.ports = []  # (dev, ip, mac, is_target)
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.ns, "link", "add", "qbr", "type", "bridge")
        sh("ip", "-n", self.ns, "link", "set", "qbr", "up")
        sh("ip", "netns", "exec", self.ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")

    def add_port(self, idx, guest_ns, ip, mac, target):
        dev = f"tap{idx}"
        sh("ip", "-n", self.ns, "link", "add", dev, "type", "veth", "peer", "name", "eth1", "netns", guest_ns)
        sh("ip", "-n", self.ns, "link", "set", dev, "master", "qbr", "up")
        sh("ip", "-n", guest_ns, "link", "set", "eth1", "address", mac)
        sh("ip", "-n", guest_ns, "-batch", "-", inp=f"addr add {ip}/20 dev eth1\nlink set eth1 up\n")
        self.ports.append((dev, ip, mac, target))

    def members_ipset(self):
        text = "create NIPv4sg hash:net family inet -exist\nflush NIPv4sg\n"
        text += "".join(f"add NIPv4sg {ip} -exist\n" for _, ip, _, t in self.ports if t)
        sh("ip", "netns", "exec", self.ns, "ipset", "restore", inp=text)

    def render(self, rules, probe):
        L = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        ch = ["neutron-openvswi-FORWARD", "neutron-openvswi-sg-chain", "neutron-openvswi-sg-fallback"]
        for dev, _, _, _ in self.ports:
            ch += [f"neutron-openvswi-i{dev}", f"neutron-openvswi-o{dev}", f"neutron-openvswi-s{dev}"]
        L += [f":{c} - [0:0]" for c in ch]
        L.append("-A FORWARD -j neutron-openvswi-FORWARD")
        ingress = []
        for r in rules + ([PROBE_RULE] if probe else []):
            m = "-p tcp -m tcp"
            src = f"-s {r['remote_cidr']} " if r.get("remote_cidr") else ""
            if r.get("port_min") is None:
                ingress.append(f"{src}{m} -j RETURN")
            else:
                ports = r["port_min"] if r["port_min"] == r["port_max"] else f"{r['port_min']}:{r['port_max']}"
                ingress.append(f"{src}{m} --dport {ports} -j RETURN")
        ingress.append("-p tcp -m tcp --dport 9 -m set --match-set NIPv4sg src -j RETURN")
        for dev, ip, mac, target in self.ports:
            L.append(
                f"-A neutron-openvswi-FORWARD -m physdev --physdev-out {dev} --physdev-is-bridged "
                f"-j neutron-openvswi-sg-chain"
            )
            L.append(
                f"-A neutron-openvswi-FORWARD -m physdev --physdev-in {dev} --physdev-is-bridged "
                f"-j neutron-openvswi-sg-chain"
            )
            L.append(
                f"-A neutron-openvswi-sg-chain -m physdev --physdev-out {dev} --physdev-is-bridged "
                f"-j neutron-openvswi-i{dev}"
            )
            L.append(
                f"-A neutron-openvswi-sg-chain -m physdev --physdev-in {dev} --physdev-is-bridged "
                f"-j neutron-openvswi-o{dev}"
            )
            i = f"-A neutron-openvswi-i{dev} "
            L.append(i + "-m state --state RELATED,ESTABLISHED -j RETURN")
            L.append(i + "-m state --state INVALID -j DROP")
            if target:
                L += [i + x for x in ingress]
            else:  # the prober: the default group's "ingress from members" only
                L.append(i + "-m set --match-set NIPv4sg src -j RETURN")
            L.append(i + "-j neutron-openvswi-sg-fallback")
            o = f"-A neutron-openvswi-o{dev} "
            L.append(o + "-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 -j RETURN")
            L.append(o + f"-j neutron-openvswi-s{dev}")
            L.append(o + "-p udp -m udp --sport 67 --dport 68 -j DROP")
            L.append(o + "-m state --state RELATED,ESTABLISHED -j RETURN")
            L.append(o + "-m state --state INVALID -j DROP")
            L.append(o + "-j RETURN")  # all egress
            s = f"-A neutron-openvswi-s{dev} "
            L.append(s + f"-s {ip}/32 -m mac --mac-source {mac} -j RETURN")
            L.append(s + "-j DROP")
        L.append("-A neutron-openvswi-sg-chain -j ACCEPT")
        L.append("-A neutron-openvswi-sg-fallback -j DROP")
        L.append("COMMIT")
        return "\n".join(L) + "\n"

    def apply(self, rules, probe):
        """One agent iteration: save, rebuild, restore the whole filter table."""
        sh("ip", "netns", "exec", self.ns, "iptables-save", "-t", "filter")
        sh("ip", "netns", "exec", self.ns, "iptables-restore", "-n", inp=self.render(rules, probe))

    def rule_count(self):
        out = sh("ip", "netns", "exec", self.ns, "iptables-save", "-t", "filter")
        return sum(1 for line in out.splitlines() if line.startswith("-A "))


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--host-names", required=True, help="host A,host B")
    ap.add_argument("--vpc-prefixes", required=True, help="VPC netns prefix on host A,on host B")
    ap.add_argument("--fillers", type=int, default=1000, help="NICs already on each host")
    ap.add_argument("--ports", type=int, default=100, help="sequential NICs measured (and sg targets)")
    ap.add_argument("--plug", choices=("tap", "veth"), default="tap",
                    help="how the measured NICs are plugged: tap (the harness opens it as QEMU does) "
                         "or veth (the harness moves its far end into the guest)")
    ap.add_argument("--changes", type=int, default=100, help="rule changes per rule count (half deny)")
    ap.add_argument("--rules", default="1000,10,10000", help="rule counts; the first is the headline")
    ap.add_argument("--peer-rules", default="10,1000", help="rule counts for the iptables peer")
    ap.add_argument("--peer-changes", type=int, default=40)
    ap.add_argument("--results", required=True, help="file for the summary (JSON)")
    ap.add_argument("--api-ns", required=True, help="the namespace the server listens in")
    ap.add_argument("--agent-pids", required=True, help="agent on host A,agent on host B")
    ap.add_argument("--datapath", choices=("linux-bridge", "openvswitch"), default="linux-bridge",
                    help="the agents' data path: where a NIC's tap is (the VPC namespace under the "
                         "NIC's device name, or host A's namespace as v<vni hex>-<device>)")
    a = ap.parse_args()
    setns(a.api_ns)  # this (main) thread talks to the server; others enter guests
    t_start = time.monotonic()
    token = open(a.token_file).read().strip()
    api = Api(a.url, token, a.ca)
    poller_api = Api(a.url, token, a.ca)
    names = a.host_names.split(",")
    vpc_prefixes = a.vpc_prefixes.split(",")
    rule_counts = [int(x) for x in a.rules.split(",") if x]
    peer_counts = [int(x) for x in a.peer_rules.split(",") if x]
    summary = {}

    # Hosts.
    deadline = time.monotonic() + 60
    while True:
        items = api.get("/v1/hosts?limit=100")["items"]
        hosts = {h["name"]: h for h in items}
        if all(n in hosts and hosts[n]["state"] == "available" for n in names):
            break
        if time.monotonic() > deadline:
            die(f"hosts not available: {[(h['name'], h['state']) for h in items]}")
        time.sleep(0.1)
    host_a, host_b = (hosts[n]["id"] for n in names)

    tenant = api.post("/v1/tenants", {"name": "netbench"})
    project = api.post("/v1/projects", {"name": "netbench", "tenant_id": tenant["id"]})
    vpc = api.post("/v1/vpcs", {"project_id": project["id"], "name": "bench", "ipv4_cidr": "10.40.0.0/16"})
    subnet = api.post("/v1/subnets", {"vpc_id": vpc["id"], "name": "s", "ipv4_cidr": "10.40.0.0/20"})
    # Half the fillers go to a second subnet: a Linux bridge takes at most 1,023 ports
    # (BR_MAX_PORTS; the next is refused with EXFULL), and the measured NICs join the
    # first subnet's bridge on top of its fillers.
    subnet2 = api.post("/v1/subnets", {"vpc_id": vpc["id"], "name": "s2", "ipv4_cidr": "10.40.16.0/20"})
    vni = vpc["vni"]
    vpc_a, vpc_b = (
        f"/proc/{pid}/root/run/netns/{p}{vni}" for p, pid in zip(vpc_prefixes, a.agent_pids.split(","))
    )
    prefix_len = subnet["ipv4_cidr"].split("/")[1]

    # Security groups: N-1 filler rules plus the probe rule (so N, at most the API's 10,000).
    groups = {}
    for n in sorted(set(rule_counts)):
        t = time.monotonic()
        g = api.post(
            "/v1/security-groups",
            {"vpc_id": vpc["id"], "name": f"r{n}", "rules": filler_rules(n - 1) + [PROBE_RULE]},
        )
        groups[n] = g
        log(f"group with {n} rules created in {time.monotonic() - t:.2f} s")

    def nic_body(name, host, ip=None, mac=None, groups_=None, sub=None, plug=None):
        b = {"subnet_id": (sub or subnet)["id"], "name": name, "host_id": host}
        if plug:
            b["plug"] = plug
        if ip:
            b["ipv4"] = ip
        if mac:
            b["mac"] = mac
        if groups_:
            b["security_group_ids"] = groups_
        return b

    def wait_ready(nic_id, deadline_s, what):
        end = time.monotonic() + deadline_s
        while True:
            n = api.get(f"/v1/network-interfaces/{nic_id}")
            if n["state"] == "ready" and (n.get("filter_generation_applied") or 0) >= n["filter_generation"]:
                return n
            if n["state"] == "failed" or time.monotonic() > end:
                die(f"{what}: NIC not ready: {json.dumps(n)[:800]}")
            time.sleep(0.05)

    # 1,000 NICs already on each host (default group), bound, no guests.
    t = time.monotonic()
    last = {}
    for i in range(a.fillers):
        for h, host in (("a", host_a), ("b", host_b)):
            last[h] = api.post("/v1/network-interfaces", nic_body(f"f{h}{i}", host, sub=(subnet, subnet2)[i % 2]))
        if time.monotonic() - t > 900:
            die("creating the filler NICs took over 900 s")
    created = time.monotonic() - t
    for h in last:
        wait_ready(last[h]["id"], 600, f"filler NICs on host {h}")
    log(f"{2 * a.fillers} filler NICs created in {created:.1f} s, all applied after {time.monotonic() - t:.1f} s")

    guests = Guests(a.prefix)
    # The prober: a guest on host B, in the default group (all egress).
    prober_guest = guests.make("p")
    prober_ns = prober_guest["ns"]
    pn = api.post("/v1/network-interfaces", nic_body("prober", host_b, "10.40.15.250"))
    pn = wait_ready(pn["id"], 60, "the prober")
    vpc_a_nl, vpc_b_nl = in_ns(vpc_a, Netlink), in_ns(vpc_b, Netlink)
    plug(vpc_b_nl, pn["device"], prober_guest, pn["mac"], f"{pn['ipv4']}/{prefix_len}")
    prober_if = prober_guest["nl"].index(f"{pn['device']}g")
    prober = Prober(prober_ns)

    # Target guests, listening before any interface exists; a tap-plugged one has its NIC
    # (a tap with the MAC its NIC will be created with) up since boot, as a VM's would be.
    targets = []
    wires = Wires()
    for i in range(a.ports):
        tg = {"guest": guests.make(f"t{i}"), "ip": f"10.40.12.{10 + i}"}
        if a.plug == "tap":
            tg["mac"] = f"0a:b7:00:00:{i >> 8:02x}:{i & 255:02x}"
            tg["gfd"] = guest_tap(tg["guest"], tg["mac"], f"{tg['ip']}/{prefix_len}", (pn["ipv4"], pn["mac"]))
        targets.append(tg)

    # ---- port-ready
    name_of_dev = "tap" if a.plug == "tap" else "veth far end"
    plug_what = "open the tap, as QEMU" if a.plug == "tap" else "move, MAC, address"
    head = rule_counts[0]
    ready_ms, server_ms, plug_ms = [], [], []
    for i, tg in enumerate(targets):
        box = {}

        def watch_server(nic_id, t0):
            end = time.monotonic() + 120
            while time.monotonic() < end:
                n = poller_api.get(f"/v1/network-interfaces/{nic_id}")
                if n["state"] == "ready":
                    box["server"] = time.monotonic() - t0
                    return
                if n["state"] == "failed":
                    box["err"] = json.dumps(n)[:600]
                    return
                time.sleep(0.02)
            box["err"] = "not ready within 120 s"

        t0, wall0 = time.monotonic(), time.time()
        nic = api.post(
            "/v1/network-interfaces",
            nic_body(f"t{i}", host_a, tg["ip"], tg.get("mac"), [groups[head]["id"]], plug=a.plug),
        )
        posted = time.monotonic() - t0
        dev = nic.get("device")
        if not dev:
            die(f"the created NIC has no device: {nic}")
        tg["id"], tg["mac"] = nic["id"], nic["mac"]
        # The prober knows the target's MAC (as a guest that already resolved it would; an
        # unanswered ARP would otherwise be retried only after a second).
        prober_guest["nl"].pin_neigh(prober_if, tg["ip"], tg["mac"])
        ws = threading.Thread(target=watch_server, args=(nic["id"], t0), daemon=True)
        ws.start()

        def plugger(dev=dev, tg=tg, t0=t0):
            name = dev if a.plug == "tap" else f"{dev}g"
            where = vpc_a
            if a.plug == "tap" and a.datapath == "openvswitch":
                name, where = f"v{vni:x}-{dev}", f"{a.prefix}h1"
            if not wait_dev(where, name, t0 + 120):
                box["err"] = f"{name} never appeared in {where}"
                return
            box["dev"] = time.monotonic() - t0
            if a.plug == "tap":
                wires.connect(in_ns(where, lambda: open_tap(name, t0 + 120)), tg["gfd"])
            else:
                plug(vpc_a_nl, dev, tg["guest"], tg["mac"], f"{tg['ip']}/{prefix_len}", (pn["ipv4"], pn["mac"]))
            box["plugged"] = time.monotonic() - t0

        pt = threading.Thread(target=plugger, daemon=True)
        pt.start()
        ok_at = prober.first_success(tg["ip"], t0 + 120)
        pt.join(120)
        ws.join(120)
        if ok_at is None or "err" in box:
            die(f"port-ready NIC {i}: {box.get('err', 'no TCP handshake within 120 s')}")
        log(f"port-ready NIC {i}: {(ok_at - t0) * 1000:.0f} ms ({name_of_dev} {box['dev'] * 1000:.0f} ms, "
            f"plugged {box['plugged'] * 1000:.0f} ms, server ready {box['server'] * 1000:.0f} ms; POST answered "
            f"{posted * 1000:.0f} ms; started {time.strftime('%H:%M:%S', time.gmtime(wall0))}.{int(wall0 % 1 * 1e6):06d} UTC, "
            "to match the logs)")
        ready_ms.append((ok_at - t0) * 1000)
        server_ms.append(box["server"] * 1000)
        plug_ms.append((box["dev"] * 1000, box["plugged"] * 1000))
    summary["port_ready"] = {"p50": pct(ready_ms, 50), "p99": pct(ready_ms, 99), "n": len(ready_ms)}
    summary["port_ready_server"] = {"p50": pct(server_ms, 50), "p99": pct(server_ms, 99)}
    vs = [v for v, _ in plug_ms]
    pl = [p - v for v, p in plug_ms]
    print(
        f"port-ready: p50 {pct(ready_ms, 50):.1f} ms p99 {pct(ready_ms, 99):.1f} ms "
        f"({len(ready_ms)} NICs, {a.fillers} NICs already on each host)",
        flush=True,
    )
    print(
        f"  server view (create -> NIC ready): p50 {pct(server_ms, 50):.1f} ms p99 {pct(server_ms, 99):.1f} ms",
        flush=True,
    )
    print(
        f"  {name_of_dev} present: p50 {pct(vs, 50):.1f} ms p99 {pct(vs, 99):.1f} ms; "
        f"harness plug ({plug_what}): p50 {pct(pl, 50):.1f} ms p99 {pct(pl, 99):.1f} ms",
        flush=True,
    )
    log(f"port-ready samples (ms): {' '.join(f'{x:.0f}' for x in ready_ms)}")

    # ---- sg-enforce
    def slow_call(label, what, ms):
        # A change's call much slower than its fellows (Plinth's: the API call; the
        # iptables peer's: its save/rebuild/restore), with the time to find it in the logs.
        if ms > 40 and not label.startswith("iptables"):
            log(f"{label}: a {what} API call took {ms:.0f} ms (answered {time.strftime('%H:%M:%S', time.gmtime())} UTC)")

    def measure_changes(apply_deny, apply_allow, changes, label):
        deny, allow, api_deny, api_allow = [], [], [], []
        for k in range(changes // 2):
            tg = targets[k % len(targets)]
            # Control: the target accepts right now.
            if prober.first_success(tg["ip"], time.monotonic() + 5) is None:
                die(f"{label}: {tg['ip']} refuses before the change (control)")
            t0 = time.monotonic()
            apply_deny()
            api_deny.append((time.monotonic() - t0) * 1000)
            slow_call(label, "deny", api_deny[-1])
            at = prober.refused_since(tg["ip"], t0 + 60)
            if at is None:
                die(f"{label}: new connections to {tg['ip']} still accepted 60 s after removing the rule")
            deny.append(max(0.0, at - t0) * 1000)
            t0 = time.monotonic()
            apply_allow()
            api_allow.append((time.monotonic() - t0) * 1000)
            slow_call(label, "allow", api_allow[-1])
            at = prober.first_success(tg["ip"], t0 + 60)
            if at is None:
                die(f"{label}: no connection to {tg['ip']} within 60 s of adding the rule")
            allow.append((at - t0) * 1000)
        # The change call's own time (Plinth's API call and its transaction: the
        # enforcement follows it).
        log(
            f"{label}: the API call answered in p50 {pct(api_deny, 50):.1f} p99 {pct(api_deny, 99):.1f} ms "
            f"(deny), p50 {pct(api_allow, 50):.1f} p99 {pct(api_allow, 99):.1f} ms (allow)"
        )
        return deny, allow

    def report(label, deny, allow):
        both = deny + allow
        print(
            f"{label}: p50 {pct(both, 50):.1f} ms p99 {pct(both, 99):.1f} ms "
            f"(deny p50 {pct(deny, 50):.1f} p99 {pct(deny, 99):.1f}; allow p50 {pct(allow, 50):.1f} "
            f"p99 {pct(allow, 99):.1f}; {len(both)} changes)",
            flush=True,
        )
        log(f"{label} deny samples (ms): {' '.join(f'{x:.0f}' for x in deny)}")
        log(f"{label} allow samples (ms): {' '.join(f'{x:.0f}' for x in allow)}")
        return {"p50": pct(both, 50), "p99": pct(both, 99), "deny_p99": pct(deny, 99), "allow_p99": pct(allow, 99)}

    summary["sg"] = {}
    for n in rule_counts:
        g = groups[n]
        if n != head:
            t = time.monotonic()
            for tg in targets:
                api.ok("PATCH", f"/v1/network-interfaces/{tg['id']}", {"security_group_ids": [g["id"]]})
            for tg in targets:
                wait_ready(tg["id"], 300, f"moving targets to the {n}-rule group")
            log(f"{len(targets)} targets moved to the {n}-rule group in {time.monotonic() - t:.1f} s")
        state = {"rule": probe_rule_id(g)}

        def deny(g=g, state=state):
            api.ok("DELETE", f"/v1/security-groups/{g['id']}/rules/{state['rule']}")

        def allow(g=g, state=state):
            r = api.post(f"/v1/security-groups/{g['id']}/rules", PROBE_RULE)
            state["rule"] = r["id"] if "id" in r else probe_rule_id(r)

        label = "sg-enforce" if n == head else f"sg-enforce at {n} rules"
        summary["sg"][n] = report(
            f"{label} ({n} rules x {len(targets)} NICs)" if n != head else label,
            *measure_changes(deny, allow, a.changes, label),
        )

    # ---- the iptables_hybrid peer, on the same guests (a second interface each)
    peer = IptablesPeer(a.prefix)
    peer.add_port(0, prober_ns, "10.41.15.250", "02:4e:43:ff:00:01", False)
    for i, tg in enumerate(targets):
        peer.add_port(i + 1, tg["guest"]["ns"], tg["ip"].replace("10.40.", "10.41."), f"02:4e:43:00:{i >> 8:02x}:{i & 255:02x}", True)
    peer.members_ipset()
    for tg in targets:
        tg["peer_ip"] = tg["ip"].replace("10.40.", "10.41.")
    summary["peer"] = {}
    for n in peer_counts:
        fill = filler_rules(n - 1)
        t = time.monotonic()
        peer.apply(fill, True)
        log(
            f"peer: {n} rules x {len(targets)} ports = {peer.rule_count()} iptables rules, "
            f"first restore {time.monotonic() - t:.2f} s"
        )
        saved = targets
        ptargets = [{"ip": tg["peer_ip"]} for tg in saved]
        targets = ptargets
        label = f"iptables_hybrid peer ({n} rules x {len(targets)} ports)"
        summary["peer"][n] = report(
            label,
            *measure_changes(lambda fill=fill: peer.apply(fill, False), lambda fill=fill: peer.apply(fill, True),
                             a.peer_changes, label),
        )
        targets = saved
    summary["elapsed_s"] = time.monotonic() - t_start
    with open(a.results, "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    main()
