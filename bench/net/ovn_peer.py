#!/usr/bin/env python3
"""bench/net's OVN peer: port-ready and sg-enforce for OVN driven as Neutron's ML2/OVN does.

Layout (everything in namespaces named `<prefix>*`, state under /run/<prefix>ovn):

* OVN central in the machine's own namespace, reachable only over unix sockets (nothing
  listens on the network, no link or route of the root namespace is touched): the NB and SB
  ovsdb-servers, ovn-northd, and an `ovn-nbctl` daemon (`--detach`, OVN_NB_DAEMON) that holds
  a replica of the NB as Neutron's ovsdbapp IDL does, so a change is one JSON-RPC exchange
  plus one process start, not a full DB download.
* Two chassis ("hosts"), namespaces `<prefix>hv1` (host A) and `<prefix>hv2` (host B), each
  with its own ovsdb-server, ovs-vswitchd (datapath_type=netdev: this kernel has no OVS
  module) and ovn-controller (state, sockets and logs in /run/<prefix>ovn/hvN). They are
  joined by a veth (MTU 9000, for the Geneve header) whose ends belong to a `br-phy` bridge
  holding the VTEP address 10.200.0.N; Geneve tunnels, OVS userspace tunnelling.
* The logical model of Neutron ML2/OVN: a logical switch per subnet (10.40.0.0/20 and
  10.40.16.0/20, as in Plinth's bench) joined by a logical router; a logical switch port per
  NIC (name = the Neutron port's UUID, `addresses` and `port_security` "MAC IP",
  options:requested-chassis); a port group `pg_<sg id>` per security group, holding its
  NICs, with one ACL per rule (priority 1002, allow-related, to-lport for ingress rules,
  from-lport for egress), e.g. `outport == @pg_x && ip4 && ip4.src == 10.9.0.2/32 && tcp`;
  Neutron's `neutron_pg_drop` (priority 1001 drop both ways) holding every NIC; a "default"
  group (egress anywhere, ingress from its own members) for the prober and the existing ports.
* Guests: a namespace per measured NIC, with a veth: `eth0` in the guest (MAC, address,
  listener on port 7000, up since before the clock starts, as a VM's NIC is up since boot),
  the other end in the chassis namespace, plugged into br-int as libvirt does:
  `ovs-vsctl add-port br-int <dev> -- set Interface <dev> external_ids:iface-id=<lsp> ...`.
  TX offloads are off on both ends (with the netdev datapath TCP stalls otherwise). The
  prober is such a guest on host A; the targets are on host B.
* An "existing port" (the N per host of port-ready) is what Plinth's bench calls a filler NIC:
  a logical switch port (default group, neutron_pg_drop, alternating between the two
  subnets) bound on its chassis and in the data path, as an OVS internal port (a tap owned by
  ovs-vswitchd in the chassis namespace, `external_ids:iface-id` set) with no guest behind
  it. All of them are up (`Logical_Switch_Port.up`) before anything is measured.

Measured as net.py measures Plinth (the same `Prober`: a new non-blocking connect() every
1 ms from the prober guest):

* port-ready: the clock starts before Neutron's create_port transaction (the LSP, its port
  groups), then the VIF is plugged (libvirt's ovs-vsctl) as net.py's plugger plays QEMU's
  part, and the time is the first completed TCP handshake from the prober on host A to the
  new guest on host B. Neutron puts no `--wait=hv` on a port create (Nova waits for the LSP
  to go up instead): that moment is recorded too (an `ovn-nbctl wait-until ... up=true`).
* sg-enforce: on the next target in turn, a control connection succeeds, then deny (the
  probe rule's ACL deleted, as Neutron's delete_security_group_rule does) measured to the
  first attempt of the final run of failed attempts (>= 200 ms of them), then allow (the ACL
  re-created and added to the port group) measured to the first completed handshake. Both
  are issued with `--wait=hv` (the barrier), but the figure is the TCP one; the barrier's own
  time is recorded beside it. A target refusing its control for 60 s, or a change not
  enforced within 60 s (both seen after ovs-vswitchd's userspace-conntrack crashes), is
  counted and printed with the results, not sampled; ABORT_AFTER failed controls in a row
  end the measurement.

At full scale OVS 3.1.0's ovs-vswitchd aborts now and then in its userspace conntrack
(`conntrack.c:1063: assertion conn->conn_type == CT_CONN_TYPE_DEFAULT failed`, see
ovn_notes.md). The daemons therefore run with --monitor (as systemd's Restart=on-failure would
restart them), a watchdog restores the VTEP address that the restart loses, every crash is
reported, and a NIC not reachable within the deadline is counted as the deadline in the
percentiles (and reported) instead of ending the run.

Stdlib only. Uses net.py (same directory) for the Prober, `in_ns` and `pct`, so both sides
are measured by the same code. Failures raise OvnPeerError (never os._exit), so a caller's
try/finally can always run teardown(); setup() also removes any leftovers of an earlier run.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import net  # noqa: E402  (Prober, in_ns, pct, LISTEN_PORT: the same probing as Plinth's side)

PROBE_PORT = net.LISTEN_PORT  # 7000
SUBNETS = (("s1", "10.40.0.1", 0x0A280000), ("s2", "10.40.16.1", 0x0A281000))  # /20 each
PREFIX_LEN = 20
PROBER_IP, PROBER_MAC = "10.40.15.250", "0a:b6:00:00:00:01"
WARM_IP, WARM_MAC = "10.40.15.251", "0a:b6:00:00:00:02"
TARGET_BASE = 0x0A280C0A  # 10.40.12.10 + i, as net.py's targets
OFF = ["tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off"]
PORT_READY_DEADLINE = 60.0  # s per port-ready sample; a NIC not reachable by then counts as this
LATE_S = 30.0  # s more of probing after a missed deadline (slow NIC or dead one?)
ABORT_AFTER = 3  # port-ready stops after this many unreachable NICs in a row
BATCH = 250  # ports (or rules) per ovn-nbctl / ovs-vsctl invocation when filling


class OvnPeerError(Exception):
    pass


def die(msg):
    raise OvnPeerError(msg)


def run(args, inp=None, env=None, check=True, timeout=300):
    try:
        r = subprocess.run(args, input=inp, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        die(f"{' '.join(args[:8])}: no answer within {timeout} s")
    if check and r.returncode != 0:
        die(f"{' '.join(args[:8])}: exit {r.returncode}: {r.stderr.strip()[:800]}")
    return r.stdout


def ip4(n):
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def chain(cmds):
    """ovn-nbctl / ovs-vsctl arguments for several commands in one transaction."""
    out = []
    for c in cmds:
        out += ["--"] + list(c)
    return out


class OvnPeer:
    def __init__(self, prefix="ovnb-", log=print):
        self.p = prefix
        self.log = log
        self.root = f"/run/{prefix}ovn"
        self.cdir = f"{self.root}/central"
        self.hvdir = [f"{self.root}/hv1", f"{self.root}/hv2"]
        self.hvns = [f"{prefix}hv1", f"{prefix}hv2"]  # host A, host B
        self.chassis = list(self.hvns)  # system-id of each chassis
        self.env = None  # with OVN_NB_DAEMON once the nbctl daemon runs
        self.fillers = [0, 0]  # existing ports per host
        self.groups = {}  # rule count -> pg name
        self.targets = []  # {"name","uuid","ip","mac","ns","dev","group"}
        self.made = 0  # target guests made (reachable ones in targets, the rest in unreachable)
        self.unreachable = []  # port-ready NICs with no handshake within the deadline
        self.listeners = []
        self.lock = threading.Lock()
        self.procs = []  # Popen objects still possibly running (watchers, changes)
        self.prober = None
        self.details = {}
        self.stop_accept = threading.Event()
        self.stop_watch = threading.Event()
        self.restarts = []  # (monotonic time, host index, old pid, new pid) of ovs-vswitchd restarts
        self.diag = None  # path for diagnostics on a failure
        self.keep = 0  # seconds to keep a failed run alive for inspection

    # ------------------------------------------------------------------ install / versions

    @staticmethod
    def install():
        need = ["ovs-vsctl", "ovs-vswitchd", "ovsdb-server", "ovn-nbctl", "ovn-northd", "ovn-controller", "ethtool"]
        if all(shutil.which(b) for b in need):
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env, timeout=600)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openvswitch-switch", "ovn-central",
             "ovn-host", "ethtool", "iproute2"], env=env, timeout=900)
        missing = [b for b in need if not shutil.which(b)]
        if missing:
            die(f"still missing after apt-get install: {missing}")

    def versions(self):
        ovs = run(["ovs-vsctl", "--version"]).splitlines()[0].split()[-1]
        ovn = run(["ovn-nbctl", "--version"]).splitlines()[0].split()[-1]
        return {"ovs": ovs, "ovn": ovn}

    # ------------------------------------------------------------------ helpers

    def nbctl(self, *args, wait=None, timeout=300):
        w = [f"--wait={wait}"] if wait else []
        return run(["ovn-nbctl", f"--timeout={timeout}"] + w + list(args), env=self.env, timeout=timeout + 10)

    def nbctl_popen(self, args, wait=None):
        w = [f"--wait={wait}"] if wait else []
        p = subprocess.Popen(["ovn-nbctl", "--timeout=120"] + w + list(args), env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def sbctl(self, *args):
        return run(["ovn-sbctl", f"--db=unix:{self.cdir}/sb.sock", "--timeout=30"] + list(args), timeout=40)

    def vsctl(self, h, *args, timeout=300):
        return run(["ovs-vsctl", f"--db=unix:{self.hvdir[h]}/db.sock", f"--timeout={timeout}"] + list(args),
                   timeout=timeout + 10)

    def ns_exec(self, ns, *args, env=None):
        return run(["ip", "netns", "exec", ns] + list(args), env=env)

    def appctl(self, target, *args):
        return run(["ovs-appctl", "-t", target] + list(args))

    def _listen(self, ns):
        s = net.in_ns(ns, net.listener, PROBE_PORT)
        with self.lock:
            self.listeners.append(s)


    # ------------------------------------------------------------------ cleanup

    def _pidfiles(self):
        # ovn-controllers first (while the SB is up), then the switches, then the DBs.
        order = []
        for d in self.hvdir:
            order += [f"{d}/ovn-controller.pid", f"{d}/ovs-vswitchd.pid", f"{d}/ovsdb-server.pid"]
        c = self.cdir
        order += [f"{c}/nbctl.pid", f"{c}/ovn-northd.pid", f"{c}/sb.pid", f"{c}/nb.pid"]
        return order

    def _ours(self, pid):
        """True if pid is alive and was started by this peer (its command line names our dir)."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return self.root.encode() in f.read()
        except OSError:
            return False

    def _cleanup(self):
        self.stop_watch.set()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []
        for pf in self._pidfiles():
            try:
                pid = int(open(pf).read().strip())
            except (OSError, ValueError):
                continue
            if not self._ours(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + 5
            while self._ours(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if self._ours(pid):
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
        self.stop_accept.set()
        with self.lock:
            for s in self.listeners:
                s.close()
            self.listeners = []
        try:
            names = os.listdir("/run/netns")
        except OSError:
            names = []
        for n in sorted(names):
            if n.startswith(self.p):
                run(["ip", "netns", "del", n], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        left = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []) if n.startswith(self.p)]
        if left:
            die(f"namespaces left after cleanup: {left}")

    def teardown(self):
        self._cleanup()
        self.log(f"ovn peer: torn down (daemons stopped, {self.p}* namespaces and {self.root} removed)")

    # ------------------------------------------------------------------ setup

    def setup(self):
        t = time.monotonic()
        self._cleanup()
        self.stop_accept = threading.Event()
        threading.Thread(target=net.drain, args=(self.lock, self.listeners, self.stop_accept), daemon=True).start()
        os.makedirs(self.cdir)
        for d in self.hvdir:
            os.makedirs(d)
        self._central()
        self._underlay()
        for h in range(2):
            self._chassis(h)
        self._warm_tunnels()
        self.stop_watch = threading.Event()
        self.vs_pid = [self._pid(f"{d}/ovs-vswitchd.pid") for d in self.hvdir]
        threading.Thread(target=self._watchdog, daemon=True).start()
        # Both chassis registered in the SB.
        end = time.monotonic() + 60
        while True:
            names = set(self.sbctl("--bare", "--columns=name", "list", "Chassis").split())
            if set(self.chassis) <= names:
                break
            if time.monotonic() > end:
                die(f"chassis not registered in the SB within 60 s: {names}")
            time.sleep(0.1)
        self._topology()
        # The prober (host A) and a warm-up guest (host B), both in the default group.
        self.prober_guest = self._guest("p", 0, "p0", PROBER_IP, PROBER_MAC, pin=False)
        self.warm = self._guest("w", 1, "w0", WARM_IP, WARM_MAC)
        self.prober = net.Prober(self.prober_guest["ns"])
        lsps = []
        for j, g in enumerate((self.prober_guest, self.warm)):
            g["name"] = str(uuid.uuid4())
            lsps.append(self._lsp_cmds(g["name"], "s1", g["mac"], g["ip"], self.groups["default"], g["h"], ref=f"g{j}"))
        self.nbctl(*chain(c for cmds in lsps for c in cmds))
        for g in (self.prober_guest, self.warm):
            self._plug(g["h"], g["dev"], g["name"], g["mac"])
        self._wait_up([g["name"] for g in (self.prober_guest, self.warm)], 60)
        self.nbctl("sync", wait="hv")
        t0 = time.monotonic()
        if self.prober.first_success(WARM_IP, t0 + 30) is None:
            die("no TCP handshake from the prober (host A) to the warm-up guest (host B) within 30 s")
        self.log(f"ovn peer: set up in {time.monotonic() - t:.1f} s (first prober handshake across the tunnel "
                 f"{(time.monotonic() - t0) * 1000:.0f} ms)")

    def _central(self):
        c = self.cdir
        env = dict(os.environ, OVN_RUNDIR=c, OVS_RUNDIR=c)
        for db, schema, name in (("nb", "ovn-nb", "OVN_Northbound"), ("sb", "ovn-sb", "OVN_Southbound")):
            run(["ovsdb-tool", "create", f"{c}/{db}.db", f"/usr/share/ovn/{schema}.ovsschema"])
            run(["ovsdb-server", f"{c}/{db}.db", f"--remote=punix:{c}/{db}.sock", f"--unixctl={c}/{db}.ctl",
                 f"--pidfile={c}/{db}.pid", f"--log-file={c}/{db}.log", "-vconsole:off", "--detach", "--no-chdir"],
                env=env)
        run(["ovn-nbctl", f"--db=unix:{c}/nb.sock", "init"])
        run(["ovn-sbctl", f"--db=unix:{c}/sb.sock", "init"])
        run(["ovn-northd", f"--ovnnb-db=unix:{c}/nb.sock", f"--ovnsb-db=unix:{c}/sb.sock",
             f"--pidfile={c}/ovn-northd.pid", f"--log-file={c}/ovn-northd.log", "-vconsole:off", "--detach",
             "--no-chdir"], env=env)
        # The nbctl daemon: one NB replica kept up to date, as Neutron's IDL.
        sock = run(["ovn-nbctl", f"--db=unix:{c}/nb.sock", "--detach", f"--pidfile={c}/nbctl.pid",
                    f"--log-file={c}/nbctl.log", "-vconsole:off", "--no-chdir"], env=env).strip()
        if not sock:
            die("ovn-nbctl --detach printed no control socket")
        self.env = dict(os.environ, OVN_NB_DAEMON=sock)
        self.nbctl("ls-list")

    def _underlay(self):
        a, b = self.hvns
        for ns in self.hvns:
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "link", "add", "ul1", "netns", a, "type", "veth", "peer", "name", "ul2", "netns", b])
        for h, ns in enumerate(self.hvns):
            run(["ip", "-n", ns, "link", "set", f"ul{h + 1}", "mtu", "9000", "up"])
            self.ns_exec(ns, "ethtool", "-K", f"ul{h + 1}", *OFF)

    def _chassis(self, h):
        d, ns, name = self.hvdir[h], self.hvns[h], self.chassis[h]
        env = dict(os.environ, OVS_RUNDIR=d, OVN_RUNDIR=d)
        run(["ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema"])
        self.ns_exec(ns, "ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                     f"--unixctl={d}/ovsdb-server.ctl", f"--pidfile={d}/ovsdb-server.pid",
                     f"--log-file={d}/ovsdb-server.log", "-vconsole:off", "--detach", "--no-chdir", env=env)
        self.vsctl(h, "--no-wait", "init")
        self.vsctl(h, "--no-wait", "set", "open_vswitch", ".", f"external_ids:system-id={name}",
                   f"external_ids:hostname={name}")
        # OVS_RUNDIR decides where br-int.mgmt goes; ovn-controller gets the same one.
        # --monitor: a crashed daemon is restarted, as Debian's systemd units do (Restart=on-failure);
        # the watchdog then restores what the restart loses (see _watchdog) and crashes are reported.
        self.ns_exec(ns, "ovs-vswitchd", f"unix:{d}/db.sock", f"--unixctl={d}/ovs-vswitchd.ctl",
                     f"--pidfile={d}/ovs-vswitchd.pid", f"--log-file={d}/ovs-vswitchd.log", "-vconsole:off",
                     "--detach", "--monitor", "--no-chdir", env=env)
        # Userspace tunnels: the VTEP address sits on an OVS bridge owning the underlay NIC.
        self.vsctl(h, "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev")
        self.vsctl(h, "add-port", "br-phy", f"ul{h + 1}")
        run(["ip", "-n", ns, "addr", "add", f"10.200.0.{h + 1}/24", "dev", "br-phy"])
        run(["ip", "-n", ns, "link", "set", "br-phy", "up"])
        self.vsctl(h, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                   "fail-mode=secure", "other-config:disable-in-band=true")
        self.vsctl(h, "set", "open_vswitch", ".", f"external_ids:ovn-remote=unix:{self.cdir}/sb.sock",
                   "external_ids:ovn-encap-type=geneve", f"external_ids:ovn-encap-ip=10.200.0.{h + 1}",
                   "external_ids:ovn-bridge-datapath-type=netdev")
        self.ns_exec(ns, "ovn-controller", f"unix:{d}/db.sock", f"--pidfile={d}/ovn-controller.pid",
                     f"--log-file={d}/ovn-controller.log", "-vconsole:off", "--detach", "--monitor", "--no-chdir",
                     env=env)

    @staticmethod
    def _pid(pidfile):
        try:
            return int(open(pidfile).read().strip())
        except (OSError, ValueError):
            return None

    def _watchdog(self):
        """After ovs-vswitchd is restarted by its --monitor (a crash), restores what the restart
        lost and what a host's network configuration would restore: br-phy is a tap owned by
        ovs-vswitchd, so it comes back without the VTEP address (no route for the tunnels), and
        the tunnel-neighbour aging setting. The restart is logged and counted (self.restarts)."""
        while not self.stop_watch.wait(0.2):
            for h in range(2):
                pid = self._pid(f"{self.hvdir[h]}/ovs-vswitchd.pid")
                if pid is None or pid == self.vs_pid[h] or not self._ours(pid):
                    continue
                t = time.monotonic()
                old, self.vs_pid[h] = self.vs_pid[h], pid
                ns, ok = self.hvns[h], False
                while not self.stop_watch.is_set() and time.monotonic() < t + 60:
                    r = subprocess.run(["ip", "-n", ns, "addr", "replace", f"10.200.0.{h + 1}/24", "dev", "br-phy"],
                                       capture_output=True)
                    if r.returncode == 0:
                        subprocess.run(["ip", "-n", ns, "link", "set", "br-phy", "up"], capture_output=True)
                        r = subprocess.run(["ovs-appctl", "-t", f"{self.hvdir[h]}/ovs-vswitchd.ctl",
                                            "tnl/neigh/aging", "3600"], capture_output=True)
                        ok = r.returncode == 0
                        if ok:
                            break
                    time.sleep(0.1)
                self.restarts.append((t, h, old, pid))
                self.log(f"ovn peer: host {'AB'[h]} ovs-vswitchd restarted by --monitor after a crash (pid {old} -> "
                         f"{pid}); VTEP address {'restored' if ok else 'NOT restored'} after "
                         f"{time.monotonic() - t:.1f} s")

    def crashes(self):
        """Crash lines (the EMER line a failed assertion leaves, and --monitor's 'pid N died,
        killed (...), restarting', one per crash) in every daemon log."""
        out = []
        for f in sorted(glob.glob(f"{self.root}/*/*.log")):
            try:
                with open(f, errors="replace") as fh:
                    for line in fh:
                        if "|EMER|" in line or ("(monitor)|" in line and "restarting" in line):
                            out.append(f"{os.path.relpath(f, self.root)}: {line.strip()}")
            except OSError:
                pass
        return out

    def _warm_tunnels(self):
        """OVS learns tunnel next hops only by snooping ARP replies on br-phy: each side resolves
        the other once (the first guest packet towards an unresolved VTEP is dropped), and
        entries are kept for the maximum idle time (3600 s) so a long fill does not age them."""
        for h, ns in enumerate(self.hvns):
            self.appctl(f"{self.hvdir[h]}/ovs-vswitchd.ctl", "tnl/neigh/aging", "3600")
        for h, ns in enumerate(self.hvns):
            run(["ip", "-n", ns, "neigh", "flush", "dev", "br-phy"])
            end = time.monotonic() + 20
            while subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W1", f"10.200.0.{2 - h}"],
                                 capture_output=True, timeout=5).returncode != 0:
                if time.monotonic() > end:
                    die(f"underlay: {ns} cannot reach 10.200.0.{2 - h}")
                time.sleep(0.2)

    def _topology(self):
        """Two subnets (a logical switch each) on a router, Neutron's drop group and default group."""
        cmds = [["lr-add", "router"]]
        for ls, gw, _ in SUBNETS:
            mac = f"0a:b5:00:00:00:0{ls[1]}"
            cmds += [["ls-add", ls], ["set", "Logical_Switch", ls, f"other_config:subnet={gw}/{PREFIX_LEN}"],
                     ["lrp-add", "router", f"lrp-{ls}", mac, f"{gw}/{PREFIX_LEN}"],
                     ["lsp-add", ls, f"rp-{ls}"], ["lsp-set-type", f"rp-{ls}", "router"],
                     ["lsp-set-addresses", f"rp-{ls}", "router"],
                     ["lsp-set-options", f"rp-{ls}", f"router-port=lrp-{ls}"]]
        cmds += [["pg-add", "neutron_pg_drop"],
                 ["acl-add", "neutron_pg_drop", "from-lport", "1001", "inport == @neutron_pg_drop && ip", "drop"],
                 ["acl-add", "neutron_pg_drop", "to-lport", "1001", "outport == @neutron_pg_drop && ip", "drop"]]
        self.nbctl(*chain(cmds))
        self.groups["default"] = self._make_group(None)
        self.nbctl("sync", wait="hv")

    # ------------------------------------------------------------------ groups (security groups)

    @staticmethod
    def _probe_match(pg):
        return f"outport == @{pg} && ip4 && tcp && tcp.dst == {PROBE_PORT}"

    @staticmethod
    def _acl_cmds(ref, pg, direction, match):
        """Neutron's ACL for one rule: a row with the rule's id, added to the group's ACLs."""
        rid = str(uuid.uuid4())
        return [[f"--id=@{ref}", "create", "ACL", f"direction={direction}", "priority=1002", "action=allow-related",
                 f'match="{match}"', f'external_ids:"neutron:security_group_rule_id"="{rid}"'],
                ["add", "Port_Group", pg, "acls", f"@{ref}"]]

    def _make_group(self, rules):
        """A security group as Neutron makes it: port group pg_<id> with the default egress rules
        (IPv4, IPv6). rules=None: Neutron's default group (ingress from its own members);
        else `rules` ingress rules as net.py's filler_rules(rules - 1) plus the probe rule
        (tcp 7000 from anywhere)."""
        pg = "pg_" + str(uuid.uuid4()).replace("-", "_")
        acls = [("from-lport", f"inport == @{pg} && ip4"), ("from-lport", f"inport == @{pg} && ip6")]
        if rules is None:
            acls += [("to-lport", f"outport == @{pg} && ip4 && ip4.src == ${pg}_ip4"),
                     ("to-lport", f"outport == @{pg} && ip6 && ip6.src == ${pg}_ip6")]
        else:
            for i in range(rules - 1):
                acls.append(("to-lport", f"outport == @{pg} && ip4 && ip4.src == {ip4(0x0A090000 + 2 * i)}/32 && tcp"))
            acls.append(("to-lport", self._probe_match(pg)))
        self.nbctl("pg-add", pg)
        for k in range(0, len(acls), BATCH):
            cmds = []
            for j, (d, m) in enumerate(acls[k:k + BATCH]):
                cmds += self._acl_cmds(f"a{j}", pg, d, m)
            self.nbctl(*chain(cmds))
        return pg

    def group(self, rules):
        if rules not in self.groups:
            t = time.monotonic()
            self.groups[rules] = self._make_group(rules)
            self.nbctl("sync", wait="hv")
            self.log(f"ovn peer: group {self.groups[rules]} with {rules} ingress rules (+2 egress) created in "
                     f"{time.monotonic() - t:.2f} s")
        return self.groups[rules]

    # ------------------------------------------------------------------ ports

    def _lsp_cmds(self, name, ls, mac, ip, pg, h, ref="p", owner="compute:nova"):
        """Neutron's create_port transaction: the LSP, on its switch, in its group and the drop group."""
        return [[f"--id=@{ref}", "create", "Logical_Switch_Port", f"name={name}", f'addresses="{mac} {ip}"',
                 f'port_security="{mac} {ip}"', "enabled=true", f'options:requested-chassis="{self.chassis[h]}"',
                 f'external_ids:"neutron:device_owner"="{owner}"',
                 f'external_ids:"neutron:security_group_ids"="{pg[3:].replace("_", "-")}"'],
                ["add", "Logical_Switch", ls, "ports", f"@{ref}"],
                ["add", "Port_Group", pg, "ports", f"@{ref}"],
                ["add", "Port_Group", "neutron_pg_drop", "ports", f"@{ref}"]]

    @staticmethod
    def _plug_cmds(dev, name, mac, internal=False):
        """libvirt's plug of a VIF into br-int (an internal port for an existing port)."""
        iface = ["set", "Interface", dev, f"external_ids:iface-id={name}", f'external_ids:attached-mac="{mac}"',
                 "external_ids:iface-status=active"]
        if internal:
            iface.append("type=internal")
        return [["--may-exist", "add-port", "br-int", dev], iface]

    def _plug(self, h, dev, name, mac):
        self.vsctl(h, *chain(self._plug_cmds(dev, name, mac)))

    def _wait_up(self, names, deadline_s):
        want = set(names)
        end = time.monotonic() + deadline_s
        while True:
            up = set(self.nbctl("--bare", "--columns=name", "find", "Logical_Switch_Port", "up=true").split())
            if want <= up:
                return
            if time.monotonic() > end:
                missing = sorted(want - up)
                die(f"{len(missing)} of {len(want)} ports not up within {deadline_s} s (e.g. {missing[:3]})")
            time.sleep(0.2)

    def _guest(self, tag, h, dev, ip, mac, pin=True):
        """A guest namespace `<prefix><tag>` listening on port 7000, its NIC up since boot: veth
        `eth0` (MAC, address) whose other end `dev` waits, up, in chassis h's namespace.
        Offloads off on both ends. It pins the prober's MAC and the prober pins its (as net.py)."""
        ns = f"{self.p}{tag}"
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", dev, "netns", self.hvns[h], "type", "veth", "peer", "name", "eth0", "netns", ns])
        batch = f"link set lo up\nlink set eth0 address {mac}\naddr add {ip}/{PREFIX_LEN} dev eth0\nlink set eth0 up\n"
        if pin:
            batch += f"neigh replace {PROBER_IP} lladdr {PROBER_MAC} dev eth0 nud permanent\n"
        run(["ip", "-n", ns, "-batch", "-"], inp=batch)
        run(["ip", "-n", self.hvns[h], "link", "set", dev, "up"])
        self.ns_exec(ns, "ethtool", "-K", "eth0", *OFF)
        self.ns_exec(self.hvns[h], "ethtool", "-K", dev, *OFF)
        self._listen(ns)
        if pin:
            run(["ip", "-n", self.prober_guest["ns"], "neigh", "replace", ip, "lladdr", mac, "dev", "eth0", "nud",
                 "permanent"])
        return {"ns": ns, "dev": dev, "ip": ip, "mac": mac, "h": h}

    def _new_target(self, name=None):
        i = self.made
        self.made += 1
        g = self._guest(f"t{i}", 1, f"t{i}", ip4(TARGET_BASE + i), f"0a:b7:00:00:{i >> 8:02x}:{i & 255:02x}")
        g["name"] = name or str(uuid.uuid4())
        return g

    def ensure_existing(self, per_host):
        """`per_host` existing ports bound on each chassis (see the module docstring): filled in
        batches of BATCH ports per ovn-nbctl transaction and per ovs-vsctl call."""
        t = time.monotonic()
        names = []
        for h in range(2):
            todo = list(range(self.fillers[h], per_host))
            for k in range(0, len(todo), BATCH):
                nb, ovs = [], []
                for j, i in enumerate(todo[k:k + BATCH]):
                    s = i % 2  # alternate between the two subnets, as Plinth's fillers
                    ls, _, base = SUBNETS[s]
                    n = (i // 2) * 2 + h  # unique per subnet across both hosts
                    ip, mac = ip4(base + 10 + n), f"0a:b8:{h:02x}:{s:02x}:{n >> 8:02x}:{n & 255:02x}"
                    name = str(uuid.uuid4())
                    names.append(name)
                    nb += self._lsp_cmds(name, ls, mac, ip, self.groups["default"], h, ref=f"f{j}")
                    ovs += self._plug_cmds(f"f{i}", name, mac, internal=True)
                self.nbctl(*chain(nb))
                self.vsctl(h, *chain(ovs))
            self.fillers[h] = max(self.fillers[h], per_host)
        if names:
            self._wait_up(names, 900)
            self.nbctl("sync", wait="hv")
            self.log(f"ovn peer: {len(names)} existing ports created, bound and up in {time.monotonic() - t:.1f} s "
                     f"({self.fillers} per host)")

    def _watch_up(self, name):
        """A separate NB client (not the daemon, which runs one command at a time) that exits
        when the LSP is up: Nova's network-vif-plugged moment."""
        c = self.cdir
        p = subprocess.Popen(["ovn-nbctl", f"--db=unix:{c}/nb.sock", "--timeout=120", "wait-until",
                              "Logical_Switch_Port", name, "up=true"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        box = {}

        def waiter():
            p.wait()
            box["t"] = time.monotonic()
            box["rc"] = p.returncode

        th = threading.Thread(target=waiter, daemon=True)
        th.start()
        return box, th

    # ------------------------------------------------------------------ diagnostics

    def diagnose(self, g=None, path=None):
        """State of both chassis (flow counts, upcalls, conntrack, bindings, log tails) written to
        `path` (outside /run/<prefix>ovn, so it survives teardown); returns the text."""
        out = []

        def sh(title, args, tail=None):
            try:
                r = subprocess.run(args, capture_output=True, text=True, timeout=60)
                txt = r.stdout + r.stderr
            except Exception as e:  # noqa: BLE001 - diagnostics must not fail
                txt = f"({e})"
            lines = txt.splitlines()
            if tail:
                lines = lines[-tail:]
            out.append(f"### {title}\n" + "\n".join(lines))

        c = self.cdir
        for h in range(2):
            d = self.hvdir[h]
            vs, oc = f"{d}/ovs-vswitchd.ctl", f"{d}/ovn-controller.ctl"
            if not os.path.exists(oc):
                oc = (glob.glob(f"{d}/ovn-controller.*.ctl") or [oc])[0]
            sh(f"hv{h + 1} br-int openflow count", ["sh", "-c", f"ovs-ofctl dump-flows unix:{d}/br-int.mgmt | wc -l"])
            sh(f"hv{h + 1} dp flows count", ["sh", "-c", f"ovs-appctl -t {vs} dpctl/dump-flows | wc -l"])
            sh(f"hv{h + 1} upcall/show", ["ovs-appctl", "-t", vs, "upcall/show"])
            sh(f"hv{h + 1} ct-stats", ["ovs-appctl", "-t", vs, "dpctl/ct-stats-show"])
            sh(f"hv{h + 1} ct maxconns", ["ovs-appctl", "-t", vs, "dpctl/ct-get-maxconns"])
            sh(f"hv{h + 1} coverage", ["ovs-appctl", "-t", vs, "coverage/show"], tail=80)
            sh(f"hv{h + 1} ovn-controller coverage", ["ovs-appctl", "-t", oc, "coverage/show"], tail=60)
            sh(f"hv{h + 1} ovs-vswitchd.log", ["tail", "-n", "40", f"{d}/ovs-vswitchd.log"])
            sh(f"hv{h + 1} ovn-controller.log", ["tail", "-n", "40", f"{d}/ovn-controller.log"])
            sh(f"hv{h + 1} top", ["sh", "-c", "top -b -n1 | head -20"])
        if g is not None:
            d = self.hvdir[1]
            sh("target Interface", ["ovs-vsctl", f"--db=unix:{d}/db.sock", "list", "Interface", g["dev"]])
            sh("target Port_Binding", ["ovn-sbctl", f"--db=unix:{c}/sb.sock", "find", "Port_Binding",
                                       f"logical_port={g['name']}"])
            sh("target LSP", ["ovn-nbctl", f"--db=unix:{c}/nb.sock", "list", "Logical_Switch_Port", g["name"]])
            sh("prober neigh", ["ip", "-n", self.prober_guest["ns"], "neigh"])
            sh("target neigh/addr", ["sh", "-c", f"ip -n {g['ns']} neigh; ip -n {g['ns']} addr; "
                                                f"ip netns exec {g['ns']} ss -ltn"])
            sh("target dev stats", ["ip", "-s", "-n", self.hvns[1], "link", "show", g["dev"]])
            sh("hv2 dp flows to target", ["sh", "-c", f"ovs-appctl -t {d}/ovs-vswitchd.ctl dpctl/dump-flows | "
                                                     f"grep -i '{g['mac']}\\|{g['ip']}' | head -20"])
            sh("hv1 dp flows to target", ["sh", "-c", f"ovs-appctl -t {self.hvdir[0]}/ovs-vswitchd.ctl "
                                                     f"dpctl/dump-flows | grep -i '{g['mac']}\\|{g['ip']}' | head -20"])
        text = "\n\n".join(out)
        if path:
            with open(path, "w") as f:
                f.write(text)
        return text

    # ------------------------------------------------------------------ port-ready

    def port_ready(self, existing_per_host, samples, rules=1, deadline_s=PORT_READY_DEADLINE):
        """ms from create_port to the first handshake, per new NIC (on host B, probed from A).
        The new NICs join the group with `rules` ingress rules (as Plinth's join its headline
        group; pass the headline rule count, 1,000 in the real run, for a like-for-like figure:
        adding a port to a port group with many ACLs is a large part of OVN's cost).

        A NIC with no handshake within `deadline_s` is not an error of the run: it is counted
        (self.details["port_ready_failed"]) and enters the returned list as the deadline itself,
        so the percentiles are over every sample, a failure counting as `deadline_s` (a lower
        bound of its true time). After the deadline the NIC is probed for LATE_S more seconds
        to tell a slow NIC from a dead one. It stays in the group (as Neutron's port would)
        but is not used as an sg-enforce target. After ABORT_AFTER failures in a row the
        remaining samples are not taken (that is printed)."""
        self.ensure_existing(existing_per_host)
        pg = self.group(rules)
        out, rows, failed = [], [], []
        self.details["port_ready"] = rows
        self.details["port_ready_failed"] = failed
        self.details["port_ready_deadline_ms"] = deadline_s * 1000
        self.details["port_ready_skipped"] = 0
        streak = 0
        seen = set(self.crashes())
        for k in range(samples):
            if streak >= ABORT_AFTER:
                self.details["port_ready_skipped"] = samples - k
                self.log(f"ovn peer: port-ready: {ABORT_AFTER} NICs in a row unreachable; the last "
                         f"{samples - k} samples are not taken")
                break
            name = str(uuid.uuid4())
            # The watcher connects and downloads the NB while the guest is made (off the clock).
            box_up, th_up = self._watch_up(name)
            g = self._new_target(name)
            time.sleep(0.05)
            box = {}

            def plugger(g=g):
                try:
                    self._plug(1, g["dev"], g["name"], g["mac"])
                    box["plugged"] = time.monotonic()
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    box["err"] = e

            t0 = time.monotonic()
            res = self.nbctl(*chain(self._lsp_cmds(g["name"], "s1", g["mac"], g["ip"], pg, 1)))
            t_nb = time.monotonic()
            pt = threading.Thread(target=plugger, daemon=True)
            pt.start()
            ok_at = self.prober.first_success(g["ip"], t0 + deadline_s)
            pt.join(60)
            th_up.join(0 if ok_at is None else 60)
            if "err" in box:
                raise box["err"]
            g["uuid"] = res.split()[0]
            g["group"] = pg
            row = {"nic": self.made - 1, "ip": g["ip"], "nb": (t_nb - t0) * 1000,
                   "plugged": (box["plugged"] - t0) * 1000 if "plugged" in box else None,
                   "up": (box_up["t"] - t0) * 1000 if box_up.get("rc") == 0 else None}
            plugged = f"{row['plugged']:.0f} ms" if row["plugged"] is not None else "n/a"
            cr = self.crashes()
            row["crashes"] = [c for c in cr if c not in seen]
            seen.update(cr)
            for line in row["crashes"]:
                self.log(f"ovn peer: DAEMON CRASH during port-ready NIC {row['nic']}: {line}")
            if ok_at is None:
                streak += 1
                path = None
                if self.diag:
                    path = f"{self.diag}.nic{row['nic']}"
                    self.diagnose(g, path)
                late = self.prober.first_success(g["ip"], time.monotonic() + LATE_S)
                row["tcp"] = None
                row["late"] = (late - t0) * 1000 if late is not None else None
                row["up"] = (box_up["t"] - t0) * 1000 if box_up.get("rc") == 0 else None
                failed.append(row)
                rows.append(row)
                out.append(deadline_s * 1000)
                lt = f"reachable at {row['late']:.0f} ms" if late is not None else f"still not reachable at " \
                     f"{(time.monotonic() - t0):.0f} s"
                up = f"{row['up']:.0f} ms" if row["up"] is not None else "not up yet"
                self.log(f"ovn port-ready NIC {row['nic']} ({g['ip']}): NO handshake within {deadline_s:g} s, "
                         f"counted as {deadline_s * 1000:.0f} ms; {lt} (create_port committed {row['nb']:.0f} ms, "
                         f"VIF plugged {plugged}, LSP up {up})" + (f"; diagnostics in {path}" if path else ""))
                if self.keep:
                    self.log(f"ovn peer: keeping the run for {self.keep} s (pid {os.getpid()})")
                    time.sleep(self.keep)
                self.unreachable.append(g)
                continue
            streak = 0
            self.targets.append(g)
            ms = (ok_at - t0) * 1000
            row["tcp"] = ms
            rows.append(row)
            out.append(ms)
            up = f"{row['up']:.0f} ms" if row["up"] is not None else "n/a"
            self.log(f"ovn port-ready NIC {row['nic']}: {ms:.0f} ms (create_port committed "
                     f"{row['nb']:.0f} ms, VIF plugged {plugged}, LSP up {up})")
        return out

    # ------------------------------------------------------------------ sg-enforce

    def _ensure_targets(self, ports, pg):
        """`ports` target NICs (guests on host B), exactly those in group pg (others moved to the
        default group), all up and reachable."""
        t = time.monotonic()
        new = []
        while len(self.targets) < ports:
            g = self._new_target()
            g["group"] = pg
            self.targets.append(g)
            new.append(g)
        for k in range(0, len(new), BATCH):
            part = new[k:k + BATCH]
            cmds = []
            for j, g in enumerate(part):
                cmds += self._lsp_cmds(g["name"], "s1", g["mac"], g["ip"], pg, 1, ref=f"t{j}")
            uuids = self.nbctl(*chain(cmds)).split()
            for g, u in zip(part, uuids):
                g["uuid"] = u
            ovs = []
            for g in part:
                ovs += self._plug_cmds(g["dev"], g["name"], g["mac"])
            self.vsctl(1, *chain(ovs))
        moves = []
        for i, g in enumerate(self.targets):
            want = pg if i < ports else (g["group"] if g["group"] != pg else self.groups["default"])
            if g["group"] != want:  # Neutron's update_port with new security groups
                moves += [["remove", "Port_Group", g["group"], "ports", g["uuid"]],
                          ["add", "Port_Group", want, "ports", g["uuid"]]]
                g["group"] = want
        for k in range(0, len(moves), 2 * BATCH):
            self.nbctl(*chain(moves[k:k + 2 * BATCH]))
        if new:
            self._wait_up([g["name"] for g in new], 300)
        self.nbctl("sync", wait="hv")
        for g in self.targets[:ports]:
            if self.prober.first_success(g["ip"], time.monotonic() + 10) is None:
                die(f"sg-enforce: target {g['ip']} not reachable after joining {pg}")
        if new or moves:
            self.log(f"ovn peer: {ports} targets in {pg} ({len(new)} new, {len(moves) // 2} moved) in "
                     f"{time.monotonic() - t:.1f} s")

    def _barrier_failed(self, p, what):
        """An `ovn-nbctl --wait=hv` that did not answer 0: the NB transaction may well have
        committed (the TCP probe decides whether the change took effect; a change that did
        not is caught by its 60 s deadline), so the run goes on and the failure is counted
        and printed with the results."""
        if p.returncode not in (None, 0):
            self.details.setdefault("barrier_failures", []).append(f"{what}: rc {p.returncode}: "
                                                                   f"{p.stderr.read()[:300].strip()}")
            self.log(f"ovn sg-enforce: {what} --wait=hv answered {p.returncode}; the figure is TCP's, going on")

    def sg_enforce(self, rules, ports, samples):
        """ms from a security-group rule change to its enforcement: `samples` changes (half
        deny, half allow, alternating; rounded up to a pair) on a group of `rules` ingress
        rules holding `ports` NICs, each change on the next NIC in turn."""
        pg = self.group(rules)
        self._ensure_targets(ports, pg)
        match = self._probe_match(pg)
        deny, allow, barrier = [], [], []
        out = []

        def timed(p, box):
            p.wait()
            box["t"] = time.monotonic()

        streak = 0
        for k in range(max(1, (samples + 1) // 2)):
            g = self.targets[k % ports]
            # Control: the target accepts before the change. After a datapath crash (the
            # userspace conntrack assertion) ovs-vswitchd restarts and its flows come back
            # in seconds: wait up to 60 s; a target that still refuses is skipped (counted,
            # and printed with the results), and ABORT_AFTER in a row end the measurement.
            if self.prober.first_success(g["ip"], time.monotonic() + 60) is None:
                self.details.setdefault("control_failures", []).append(g["ip"])
                self.log(f"ovn sg-enforce: {g['ip']} refuses before change {k} (control); skipped")
                streak += 1
                if streak >= ABORT_AFTER:
                    self.log(f"ovn sg-enforce: {ABORT_AFTER} controls in a row failed; stopping after {len(deny)} pairs")
                    break
                continue
            streak = 0
            # deny: Neutron's delete_security_group_rule (the ACL out of the port group)
            t0 = time.monotonic()
            p = self.nbctl_popen(["acl-del", pg, "to-lport", "1002", match], wait="hv")
            bx = {}
            th = threading.Thread(target=timed, args=(p, bx), daemon=True)
            th.start()
            at = self.prober.refused_since(g["ip"], t0 + 60)
            th.join(120)
            self._barrier_failed(p, "acl-del")
            if at is None:
                # A datapath crash can keep the old flows or lose the new ones: counted,
                # printed with the results, and the pair is not sampled.
                self.details.setdefault("enforce_failures", []).append(f"deny on {g['ip']}: still accepted after 60 s")
                self.log(f"ovn sg-enforce: connections to {g['ip']} still accepted 60 s after deleting the rule")
                self.nbctl(*chain(self._acl_cmds("a", pg, "to-lport", match)))
                continue
            d = max(0.0, at - t0) * 1000
            deny.append(d)
            # The barrier's time, when its ovn-nbctl ended (a failed one is counted above).
            bd = (bx["t"] - t0) * 1000 if "t" in bx else None
            # allow: Neutron's create_security_group_rule (a new ACL added to the port group)
            t0 = time.monotonic()
            p = self.nbctl_popen(chain(self._acl_cmds("a", pg, "to-lport", match)), wait="hv")
            bx = {}
            th = threading.Thread(target=timed, args=(p, bx), daemon=True)
            th.start()
            at = self.prober.first_success(g["ip"], t0 + 60)
            th.join(120)
            self._barrier_failed(p, "acl create")
            if at is None:
                self.details.setdefault("enforce_failures", []).append(f"allow on {g['ip']}: refused after 60 s")
                self.log(f"ovn sg-enforce: no connection to {g['ip']} within 60 s of re-adding the rule")
                continue
            a = (at - t0) * 1000
            allow.append(a)
            ba = (bx["t"] - t0) * 1000 if "t" in bx else None
            barrier += [b for b in (bd, ba) if b is not None]
            out += [d, a]
            shown = ["?" if b is None else f"{b:.0f}" for b in (bd, ba)]
            self.log(f"ovn sg-enforce change {k}: deny {d:.0f} ms (barrier {shown[0]}), "
                     f"allow {a:.0f} ms (barrier {shown[1]})")
        self.details["sg_enforce"] = {"deny": deny, "allow": allow, "barrier": barrier}
        return out


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="OVN peer smoke run (setup, port-ready, sg-enforce, teardown)")
    ap.add_argument("--existing", type=int, default=20, help="existing ports per host")
    ap.add_argument("--samples", type=int, default=5, help="port-ready NICs and sg changes")
    ap.add_argument("--rules", type=int, default=50, help="ingress rules of the group")
    ap.add_argument("--ports", type=int, default=10, help="NICs in the group for sg-enforce")
    ap.add_argument("--prefix", default="ovnb-")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--deadline", type=float, default=PORT_READY_DEADLINE,
                    help="s per port-ready sample (an unreachable NIC counts as this)")
    ap.add_argument("--diag", help="on a failure, write both chassis' state here")
    ap.add_argument("--keep", type=float, default=0, help="on a failure, keep the run alive this many s")
    ap.add_argument("--json", help="also write the figures here (bench/net/run reads them)")
    a = ap.parse_args()

    def log(m):
        print(m, file=sys.stderr, flush=True)

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    if not a.no_install:
        OvnPeer.install()
    peer = OvnPeer(a.prefix, log)
    peer.diag, peer.keep = a.diag, a.keep
    rc = 0
    try:
        v = peer.versions()
        peer.setup()
        pr = peer.port_ready(a.existing, a.samples, rules=a.rules, deadline_s=a.deadline)
        sg = peer.sg_enforce(a.rules, a.ports, a.samples)
        d = peer.details["port_ready"]
        ups = [r["up"] for r in d if r["up"] is not None]
        print(f"ovn versions: ovs {v['ovs']}, ovn {v['ovn']}")
        nf = len(peer.details["port_ready_failed"])
        dl = peer.details["port_ready_deadline_ms"]
        print(f"ovn port-ready: p50 {net.pct(pr, 50):.1f} ms p99 {net.pct(pr, 99):.1f} ms "
              f"({len(pr)} NICs, {a.existing} existing ports per host, group of {a.rules} rules; "
              f"{nf} of {len(pr)} NICs not reachable within {dl / 1000:g} s, counted as {dl:.0f} ms"
              + (f"; {peer.details['port_ready_skipped']} samples not taken after {ABORT_AFTER} failures in a row"
                 if peer.details["port_ready_skipped"] else "") + ")")
        ok = [r["tcp"] for r in d if r["tcp"] is not None]
        if nf and ok:
            print(f"  reachable NICs only: p50 {net.pct(ok, 50):.1f} ms p99 {net.pct(ok, 99):.1f} ms ({len(ok)} NICs)")
        if ups:
            print(f"  LSP up (Nova's vif-plugged): p50 {net.pct(ups, 50):.1f} ms p99 {net.pct(ups, 99):.1f} ms")
        cr = peer.crashes()
        print(f"ovn daemon crashes: {sum('restarting' in c for c in cr)} (ovs-vswitchd restarts by --monitor: "
              f"{len(peer.restarts)}, during port-ready NICs "
              f"{[r['nic'] for r in d if r.get('crashes')] or 'none'})")
        for c in cr:
            print(f"  {c}")
        s = peer.details["sg_enforce"]
        print(f"ovn sg-enforce: p50 {net.pct(sg, 50):.1f} ms p99 {net.pct(sg, 99):.1f} ms ({a.rules} rules x "
              f"{a.ports} ports; deny p50 {net.pct(s['deny'], 50):.1f} p99 {net.pct(s['deny'], 99):.1f}; allow p50 "
              f"{net.pct(s['allow'], 50):.1f} p99 {net.pct(s['allow'], 99):.1f}; --wait=hv barrier p50 "
              f"{net.pct(s['barrier'] or [float('nan')], 50):.1f} p99 {net.pct(s['barrier'] or [float('nan')], 99):.1f}; {len(sg)} changes)")
        for f in peer.details.get("barrier_failures", []):
            print(f"  --wait=hv barrier failed (the change's TCP figure counted): {f}")
        for f in peer.details.get("enforce_failures", []):
            print(f"  change not enforced within 60 s (no sample): {f}")
        if peer.details.get("control_failures"):
            print(f"  targets refusing before their change (skipped, no sample): {peer.details['control_failures']}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"versions": v,
                           "port_ready": {"p50": net.pct(pr, 50), "p99": net.pct(pr, 99), "n": len(pr),
                                          "failed": nf, "deadline_ms": dl,
                                          "skipped": peer.details["port_ready_skipped"]},
                           "crashes": cr,
                           "sg": {"p50": net.pct(sg, 50), "p99": net.pct(sg, 99), "n": len(sg)}}, f)
    except KeyboardInterrupt:
        log("ovn peer: interrupted")
        rc = 130
    except OvnPeerError as e:
        log(f"ovn peer: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if rc:
            for c in peer.crashes():
                log(f"ovn peer: daemon crash: {c}")
        peer.teardown()
    sys.exit(rc)


if __name__ == "__main__":
    main()
