#!/usr/bin/env python3
"""bench/storage peers: hot-plug latency of a virtio-blk disk (a fresh 1 GiB qcow2 volume)
into a running guest, for two peers of Plinth's volume attach:

  qmp      bare QEMU driven over QMP: blockdev-add (file + qcow2), device_add on root port hp0;
           device_del, until the DEVICE_DELETED event; then blockdev-del;
  libvirt  libvirt 9.0 (qemu:///system, a transient domain of the same shape):
           `virsh attach-disk --live`; `virsh detach-disk --live`, until libvirt's
           device-removed event.

    python3 bench/storage/peers.py qmp     --iterations 5 --workdir /tmp/peers-qmp
    python3 bench/storage/peers.py libvirt --iterations 5 --workdir /tmp/peers-libvirt
    (--kernel/--initrd/--cmdline default to the test guest in ~/.cache/plinth/test-guest;
    --cmdline takes the text, or @FILE to read it; bench/storage/install-peers.sh installs
    and starts what this needs)

The guest is Plinth's test guest (scripts/test-guest): q35, TCG, -cpu max, 1 vCPU, 256 MiB,
direct PVH boot of vmlinux + initramfs, serial console to DIR/console.log, 8 empty
pcie-root-ports hp0..hp7 (as Plinth's agent makes them), no NIC. A NoCloud seed (a CIDATA
vfat image, read-only virtio-blk on pcie.0 slot 0x0a, serial SEED) carries a user-data
script that /init runs: it starts a watcher which, every 10 ms, lists /sys/block/vd* and
prints `BENCH-SEEN <serial>` for each new disk and `BENCH-GONE <serial>` for each one gone.

Per iteration i (volume vol{i}.qcow2 made by `qemu-img create -f qcow2 ... 1G` untimed):
  attach = from just before the first QMP command / spawning `virsh attach-disk`, to the
           console showing `BENCH-SEEN BENCH{i}` (polled every 5 ms) and the command done;
  detach = from just before `device_del` / spawning `virsh detach-disk`, to QMP's
           DEVICE_DELETED for vd0 / libvirt's device-removed event for the disk (and the
           command done). Afterwards (untimed) the watcher's `BENCH-GONE BENCH{i}` is awaited
           so the next iteration starts from a guest without the disk.
Every wait has a deadline. stdout: one JSON object; stderr: progress. Standard library only.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import queue
from xml.sax.saxutils import escape, quoteattr

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"
GUEST_DIR = os.path.expanduser("~/.cache/plinth/test-guest")
MEMORY_MIB = 256
VCPUS = 1
PORTS = 8
SEED_SERIAL = "SEED"
SEED_SLOT = 0x0A  # the seed's slot on pcie.0 (hp0..hp7 take slots 1..8 in both peers)

CONSOLE_POLL_S = 0.005
BOOT_DEADLINE_S = 120.0
ATTACH_DEADLINE_S = 60.0
DETACH_DEADLINE_S = 60.0
GONE_DEADLINE_S = 60.0
CMD_DEADLINE_S = 60.0  # one QMP command / one virsh call


def say(msg):
    print(f"peers: {msg}", file=sys.stderr, flush=True)


class Fail(Exception):
    pass


def p_nearest(samples, p):
    """Nearest-rank percentile of the samples."""
    s = sorted(samples)
    return s[max(1, math.ceil(p / 100 * len(s))) - 1]


def run(argv, timeout=CMD_DEADLINE_S):
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Fail(f"{' '.join(argv[:3])}… did not finish within {timeout:.0f}s")
    if r.returncode != 0:
        raise Fail(f"{' '.join(argv)} failed (rc {r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return r.stdout.decode(errors="replace")


# --- the guest's seed ------------------------------------------------------------------------

# Runs as /run/user-data under the test guest's /init (cidata() in scripts/test-guest), which
# prints `PLINTH-USERDATA exit=<rc>` once it returns; the watcher stays in the background.
# Disks are known by name=serial; a disk's serial is read once, when its name appears.
USER_DATA = r"""#!/bin/sh
# bench/storage watcher: BENCH-SEEN <serial> for each new vd* disk, BENCH-GONE <serial> for each one gone.
(
  known=" "
  while :; do
    now=" "
    for d in /sys/block/vd*; do
      [ -e "$d" ] || continue
      n=${d##*/}
      case "$known" in
        *" $n="*)
          t=${known#*" $n="}
          now="$now$n=${t%% *} "
          ;;
        *)
          s=
          { read -r s <"$d/serial"; } 2>/dev/null
          if [ -n "$s" ]; then
            echo "BENCH-SEEN $s"
            now="$now$n=$s "
          fi
          ;;
      esac
    done
    for tok in $known; do
      case "$now" in *" $tok "*) ;; *) echo "BENCH-GONE ${tok#*=}" ;; esac
    done
    known=$now
    usleep 10000
  done
) </dev/null >/dev/console 2>&1 &
echo "BENCH-WATCHER pid=$!"
exit 0
"""

META_DATA = "instance-id: bench\nlocal-hostname: bench\n"


def make_seed(workdir):
    """A 1 MiB vfat image labelled CIDATA with meta-data and user-data (mcopy, no mount)."""
    for tool in ("mkfs.vfat", "mcopy"):
        if not shutil.which(tool):
            raise Fail(f"{tool} not found (run bench/storage/install-peers.sh: dosfstools, mtools)")
    seed = os.path.join(workdir, "seed.img")
    if os.path.exists(seed):
        os.unlink(seed)
    run(["mkfs.vfat", "-C", "-n", "CIDATA", seed, "1024"])
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for name, text in (("meta-data", META_DATA), ("user-data", USER_DATA)):
        src = os.path.join(workdir, name)
        with open(src, "w") as f:
            f.write(text)
        r = subprocess.run(["mcopy", "-o", "-i", seed, src, f"::{name}"], env=env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=CMD_DEADLINE_S)
        if r.returncode != 0:
            raise Fail(f"mcopy {name} into {seed} failed: {r.stderr.decode(errors='replace').strip()}")
    return seed


# --- the serial console ----------------------------------------------------------------------


class Console:
    """Follows the serial log file; finds whole lines from a given offset on."""

    def __init__(self, path):
        self.path = path
        self.buf = b""

    def _read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(len(self.buf))
                more = f.read()
        except FileNotFoundError:
            return
        self.buf += more

    def mark(self):
        self._read()
        return len(self.buf)

    def find(self, line, since):
        """The offset just past `line` (a whole line) at or after `since`, or None."""
        pat = re.compile(rb"(?m)^" + re.escape(line.encode()) + rb"\r?$")
        m = pat.search(self.buf, since)
        return m.end() if m else None

    def wait(self, lines, since, deadline_s, what, alive=None, extra_done=None):
        """Polls every 5 ms until every line of `lines` is found after `since` (and
        extra_done() is true); returns (time of the poll that found them, end offset)."""
        end = time.monotonic() + deadline_s
        self.found_at = None  # the poll that first found every line (before extra_done)
        while True:
            self._read()
            offs = [self.find(line, since) for line in lines]
            now = time.monotonic()
            if all(o is not None for o in offs):
                if self.found_at is None:
                    self.found_at = now
                if extra_done is None or extra_done():
                    return now, max(offs)
            if alive is not None:
                alive()
            if now > end:
                missing = [line for line, o in zip(lines, offs) if o is None]
                tail = self.buf[-600:].decode(errors="replace")
                raise Fail(f"{what}: no {missing or 'completion'} within {deadline_s:.0f}s; "
                           f"console tail:\n{tail}")
            time.sleep(CONSOLE_POLL_S)


# --- QMP ---------------------------------------------------------------------------------------


class Qmp:
    def __init__(self, path, deadline_s, alive):
        end = time.monotonic() + deadline_s
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                alive()
                if time.monotonic() > end:
                    raise Fail(f"no QMP socket at {path} within {deadline_s:.0f}s")
                time.sleep(0.02)
        self.f = self.sock.makefile("rb")
        self.events = []  # (monotonic time, event object)
        self.cond = threading.Condition()
        self.replies = queue.Queue()
        self.next_id = 0
        greeting = self.f.readline()
        if b"QMP" not in greeting:
            raise Fail(f"unexpected QMP greeting: {greeting!r}")
        threading.Thread(target=self._reader, daemon=True).start()
        self.cmd("qmp_capabilities")

    def _reader(self):
        try:
            for line in self.f:
                t = time.monotonic()
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if "event" in obj:
                    with self.cond:
                        self.events.append((t, obj))
                        self.cond.notify_all()
                else:
                    self.replies.put(obj)
        except OSError:
            pass
        self.replies.put(None)
        with self.cond:
            self.events.append((time.monotonic(), {"event": "__CLOSED__"}))
            self.cond.notify_all()

    def cmd(self, name, args=None, timeout=CMD_DEADLINE_S):
        self.next_id += 1
        msg = {"execute": name, "id": self.next_id}
        if args is not None:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        try:
            r = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise Fail(f"QMP {name}: no answer within {timeout:.0f}s")
        if r is None:
            raise Fail(f"QMP {name}: the monitor closed")
        if "error" in r:
            raise Fail(f"QMP {name} {json.dumps(args)}: {r['error'].get('desc', r['error'])}")
        return r.get("return")

    def mark(self):
        with self.cond:
            return len(self.events)

    def wait_event(self, pred, since, deadline_s, what):
        end = time.monotonic() + deadline_s
        with self.cond:
            while True:
                for t, ev in self.events[since:]:
                    if ev["event"] == "__CLOSED__":
                        raise Fail(f"{what}: the QMP monitor closed")
                    if pred(ev):
                        return t
                left = end - time.monotonic()
                if left <= 0:
                    raise Fail(f"{what}: no event within {deadline_s:.0f}s")
                self.cond.wait(left)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- the peers -----------------------------------------------------------------------------


def volume(workdir, i, size="1G"):
    path = os.path.join(workdir, f"vol{i}.qcow2")
    if os.path.exists(path):
        os.unlink(path)
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", path, size])
    return path


# Snapshot sizes (GiB of virtual size): the files are sparse, so 1 TiB costs nothing.
SNAPSHOT_GIB = [1, 100, 1024]


class QmpPeer:
    name = "qmp"

    def __init__(self, a, seed):
        self.a = a
        self.seed = seed
        self.proc = None
        self.qmp = None
        self.sock = os.path.join(a.workdir, "qmp.sock")
        self.stderr_path = os.path.join(a.workdir, "qemu.stderr")

    def argv(self):
        ports = []
        for i in range(PORTS):
            ports += ["-device", f"pcie-root-port,id=hp{i},bus=pcie.0,chassis={i + 1},slot={i + 1}"]
        return [
            QEMU, "-name", "guest=bench-storage-qmp",
            "-machine", "q35", "-accel", "tcg", "-cpu", "max",
            "-smp", str(VCPUS), "-m", f"{MEMORY_MIB}M",
            "-nodefaults", "-no-user-config", "-nographic",
            "-qmp", f"unix:{self.sock},server=on,wait=off",
            "-serial", f"file:{self.a.console}",
            "-kernel", self.a.kernel, "-initrd", self.a.initrd, "-append", self.a.cmdline,
            *ports,
            "-blockdev", f"driver=file,node-name=seed-file,filename={self.seed},read-only=on",
            "-blockdev", "driver=raw,node-name=seed,file=seed-file,read-only=on",
            "-device", f"virtio-blk-pci,drive=seed,id=seed0,serial={SEED_SERIAL},bus=pcie.0,addr={SEED_SLOT:#x}",
        ]

    def alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            try:
                with open(self.stderr_path, errors="replace") as f:
                    err = f.read()[-800:]
            except OSError:
                err = ""
            raise Fail(f"QEMU exited (rc {self.proc.returncode}): {err.strip()}")

    def start(self):
        for p in (self.sock, self.a.console):
            if os.path.exists(p):
                os.unlink(p)
        argv = self.argv()
        say("starting " + " ".join(argv))
        with open(self.stderr_path, "wb") as err:
            t = time.monotonic()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)
        self.qmp = Qmp(self.sock, 30.0, self.alive)
        return t

    def attach(self, i, path, console):
        since = console.mark()
        t0 = time.monotonic()
        self.qmp.cmd("blockdev-add", {"driver": "file", "node-name": f"v{i}-file", "filename": path,
                                      "cache": {"direct": self.a.cache == "none", "no-flush": False},
                                      "aio": "threads", "discard": "unmap"})
        self.qmp.cmd("blockdev-add", {"driver": "qcow2", "node-name": f"v{i}", "file": f"v{i}-file",
                                      "discard": "unmap"})
        self.qmp.cmd("device_add", {"driver": "virtio-blk-pci", "bus": "hp0", "drive": f"v{i}",
                                    "serial": f"BENCH{i}", "id": "vd0"})
        t_cmd = time.monotonic()
        t_seen, end = console.wait([f"BENCH-SEEN BENCH{i}"], since, ATTACH_DEADLINE_S,
                                   f"attach {i}", alive=self.alive)
        return t0, t_seen, {"qmp_cmds_ms": (t_cmd - t0) * 1000}, end

    def detach(self, i, console):
        mark = self.qmp.mark()
        t1 = time.monotonic()
        self.qmp.cmd("device_del", {"id": "vd0"})
        t_cmd = time.monotonic()
        t_del = self.qmp.wait_event(lambda ev: ev["event"] == "DEVICE_DELETED" and
                                    ev.get("data", {}).get("device") == "vd0",
                                    mark, DETACH_DEADLINE_S, f"detach {i}: DEVICE_DELETED vd0")
        t2 = time.monotonic()
        # The top of the disk's chain goes first (after a snapshot: the overlay's nodes,
        # which detach_snapshotted removes; v{i} is then still its backing).
        for n in (f"v{i}", f"v{i}-file"):
            try:
                self.qmp.cmd("blockdev-del", {"node-name": n})
            except Fail:
                pass
        t3 = time.monotonic()
        return t1, t_del, {"device_del_ms": (t_cmd - t1) * 1000, "blockdev_del_ms": (t3 - t2) * 1000}

    def snapshot(self, i, path, gib):
        """A disk-only external snapshot of the attached disk v{i}: what libvirt does, by hand."""
        overlay = path + ".snap"
        t0 = time.monotonic()
        run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-u", "-b", path, "-F", "qcow2", overlay, f"{gib}G"])
        self.qmp.cmd("blockdev-add", {"driver": "file", "node-name": f"s{i}-file", "filename": overlay,
                                      "cache": {"direct": self.a.cache == "none", "no-flush": False},
                                      "aio": "threads", "discard": "unmap"})
        self.qmp.cmd("blockdev-add", {"driver": "qcow2", "node-name": f"s{i}", "file": f"s{i}-file",
                                      "backing": None, "discard": "unmap"})
        self.qmp.cmd("blockdev-snapshot", {"node": f"v{i}", "overlay": f"s{i}"})
        return t0, time.monotonic(), overlay

    def detach_snapshotted(self, i, console):
        t1, t_del, info = self.detach(i, console)
        for n in (f"s{i}", f"s{i}-file", f"v{i}", f"v{i}-file"):
            self.qmp.cmd("blockdev-del", {"node-name": n})
        return t1, t_del, info

    def stop(self):
        if self.qmp is not None:
            try:
                self.qmp.cmd("quit", timeout=5)
            except Fail:
                pass
            self.qmp.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None:
            say(f"QEMU (pid {self.proc.pid}) stopped")


class LibvirtPeer:
    name = "libvirt"

    def __init__(self, a, seed):
        self.a = a
        self.seed = seed
        self.dom = f"plinth-bench-storage-{os.getpid()}"
        self.created = False
        self.pid = None
        self.events_proc = None
        self.events = []  # (monotonic time, type, detail)
        self.cond = threading.Condition()

    def virsh(self, *args, timeout=CMD_DEADLINE_S):
        return run(["virsh", "-q", "-c", self.a.uri, *args], timeout=timeout)

    def domain_xml(self):
        ports = "\n".join(
            f"""    <controller type='pci' index='{i + 1}' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='{i + 1}' port='{0x10 + i:#x}'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='{i + 1:#04x}' function='0x0'/>
    </controller>""" for i in range(PORTS))
        return f"""<domain type='qemu'>
  <name>{self.dom}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <vcpu>{VCPUS}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(self.a.kernel)}</kernel>
    <initrd>{escape(self.a.initrd)}</initrd>
    <cmdline>{escape(self.a.cmdline)}</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <cpu mode='maximum' check='none'/>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <controller type='pci' index='0' model='pcie-root'/>
{ports}
    <controller type='usb' model='none'/>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(self.seed)}/>
      <target dev='vdz' bus='virtio'/>
      <readonly/>
      <serial>{SEED_SERIAL}</serial>
      <address type='pci' domain='0x0000' bus='0x00' slot='{SEED_SLOT:#04x}' function='0x0'/>
    </disk>
    <serial type='file'>
      <source path={quoteattr(self.a.console)}/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path={quoteattr(self.a.console)}/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
"""

    def qemu_pid(self):
        try:
            with open(f"/run/libvirt/qemu/{self.dom}.pid") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def alive(self):
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise Fail(f"the domain's QEMU (pid {pid}) is gone; see /var/log/libvirt/qemu/{self.dom}.log")
        if self.events_proc is not None and self.events_proc.poll() is not None:
            raise Fail(f"`virsh event` exited (rc {self.events_proc.returncode})")

    def _events_reader(self):
        pat = re.compile(r"event '([\w-]+)' for domain '[^']*'(?:: (.*))?")
        for line in self.events_proc.stdout:
            t = time.monotonic()
            m = pat.search(line.decode(errors="replace"))
            if m:
                with self.cond:
                    self.events.append((t, m.group(1), (m.group(2) or "").strip()))
                    self.cond.notify_all()

    def wait_event(self, kind, detail, since_t, deadline_s, what):
        end = time.monotonic() + deadline_s
        with self.cond:
            while True:
                for t, k, d in self.events:
                    if t >= since_t and k == kind and d == detail:
                        return t
                left = end - time.monotonic()
                if left <= 0:
                    raise Fail(f"{what}: no '{kind}' event for {detail} within {deadline_s:.0f}s "
                               f"(events seen: {[(k, d) for _, k, d in self.events][-6:]})")
                self.cond.wait(min(left, 0.5))
                self.alive()

    def start(self):
        if not shutil.which("virsh"):
            raise Fail("virsh not found (run bench/storage/install-peers.sh)")
        try:
            self.virsh("uri", timeout=15)
        except Fail as e:
            raise Fail(f"cannot reach libvirtd at {self.a.uri} (run bench/storage/install-peers.sh): {e}")
        if os.path.exists(self.a.console):
            os.unlink(self.a.console)
        xml = os.path.join(self.a.workdir, "domain.xml")
        with open(xml, "w") as f:
            f.write(self.domain_xml())
        say(f"virsh create {xml} (domain {self.dom})")
        t = time.monotonic()
        self.created = True  # from here on, destroy on the way out (harmless if it failed)
        self.virsh("create", xml, timeout=120)
        self.pid = self.qemu_pid()
        say(f"domain {self.dom} runs (QEMU pid {self.pid}); virsh create took {(time.monotonic() - t) * 1000:.0f} ms")
        # One subscriber for the whole run: every event of the domain, one line each
        # (stdbuf: virsh's stdout is a pipe, so it would be block-buffered).
        argv = ["virsh", "-c", self.a.uri, "event", "--domain", self.dom, "--all", "--loop"]
        if shutil.which("stdbuf"):
            argv = ["stdbuf", "-oL", *argv]
        self.events_proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._events_reader, daemon=True).start()
        return t

    def _spawn_wait(self, argv, what):
        """Spawns a virsh call; returns a function that says whether it is done (raising if
        it failed) and the time it was seen to end."""
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        state = {"t": None}
        end = time.monotonic() + CMD_DEADLINE_S

        def done():
            if state["t"] is not None:
                return True
            rc = p.poll()
            if rc is None:
                if time.monotonic() > end:
                    p.kill()
                    raise Fail(f"{what}: `{' '.join(argv[3:6])}…` did not return within {CMD_DEADLINE_S:.0f}s")
                return False
            state["t"] = time.monotonic()
            out, err = p.communicate()
            if rc != 0:
                raise Fail(f"{what}: {' '.join(argv)} failed (rc {rc}): {err.decode(errors='replace').strip()}")
            return True
        return done, state

    def attach(self, i, path, console):
        since = console.mark()
        argv = ["virsh", "-q", "-c", self.a.uri, "attach-disk", self.dom, path, "vdb", "--live",
                "--driver", "qemu", "--subdriver", "qcow2", "--targetbus", "virtio",
                "--cache", self.a.cache, "--io", "threads", "--serial", f"BENCH{i}",
                "--alias", f"ua-bench{i}", "--address", "pci:0000.01.00.0"]
        t0 = time.monotonic()
        done, st = self._spawn_wait(argv, f"attach {i}")
        t_seen, end = console.wait([f"BENCH-SEEN BENCH{i}"], since, ATTACH_DEADLINE_S, f"attach {i}",
                                   alive=self.alive, extra_done=done)
        # libvirt's device-added is emitted before attach-disk returns: by the detach,
        # the subscriber has surely registered (checked here, untimed).
        self.wait_event("device-added", f"ua-bench{i}", t0, 10, f"attach {i}")
        return t0, max(t_seen, st["t"]), {"virsh_returned_ms": (st["t"] - t0) * 1000,
                                          "seen_ms": (console.found_at - t0) * 1000}, end

    def detach(self, i, console):
        argv = ["virsh", "-q", "-c", self.a.uri, "detach-disk", self.dom, "vdb", "--live"]
        t1 = time.monotonic()
        done, st = self._spawn_wait(argv, f"detach {i}")
        end = time.monotonic() + DETACH_DEADLINE_S
        while not done():
            if time.monotonic() > end:
                raise Fail(f"detach {i}: virsh detach-disk did not return")
            time.sleep(CONSOLE_POLL_S)
        t_ev = self.wait_event("device-removed", f"ua-bench{i}", t1, DETACH_DEADLINE_S, f"detach {i}")
        return t1, max(t_ev, st["t"]), {"virsh_returned_ms": (st["t"] - t1) * 1000,
                                        "event_ms": (t_ev - t1) * 1000}

    def snapshot(self, i, path, gib):
        """`virsh snapshot-create-as --disk-only --atomic --no-metadata` of vdb (the seed is left out)."""
        overlay = path + ".snap"
        argv = ["virsh", "-q", "-c", self.a.uri, "snapshot-create-as", self.dom, f"bench{i}", "--disk-only",
                "--atomic", "--no-metadata", "--diskspec", f"vdb,snapshot=external,file={overlay}",
                "--diskspec", "vdz,snapshot=no"]
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, timeout=CMD_DEADLINE_S)
        t1 = time.monotonic()
        if r.returncode != 0:
            raise Fail(f"snapshot {i}: {' '.join(argv)}: {r.stderr.decode(errors='replace').strip()}")
        return t0, t1, overlay

    def detach_snapshotted(self, i, console):
        return self.detach(i, console)

    def stop(self):
        if self.created:
            try:
                self.virsh("destroy", self.dom, timeout=30)
                say(f"domain {self.dom} destroyed")
            except Fail as e:
                say(f"destroying {self.dom}: {e}")
        if self.events_proc is not None and self.events_proc.poll() is None:
            os.killpg(self.events_proc.pid, signal.SIGTERM)
            try:
                self.events_proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.events_proc.pid, signal.SIGKILL)


# --- main ------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=["qmp", "libvirt"])
    ap.add_argument("--kernel", default=os.path.join(GUEST_DIR, "vmlinux"))
    ap.add_argument("--initrd", default=os.path.join(GUEST_DIR, "initramfs.cpio.gz"))
    ap.add_argument("--cmdline", default="@" + os.path.join(GUEST_DIR, "cmdline"),
                    help="the kernel command line, or @FILE to read it (default: the test guest's)")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--snapshot-iterations", type=int, default=3, help="snapshots per size (1 GiB, 100 GiB, 1 TiB)")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--uri", default="qemu:///system", help="libvirt URI (libvirt peer)")
    ap.add_argument("--cache", choices=["none", "writeback"], default="none",
                    help="the volume's host cache: none = O_DIRECT, as Plinth's agent by default")
    a = ap.parse_args()
    if a.iterations < 1:
        ap.error("--iterations must be at least 1")
    if a.cmdline.startswith("@"):
        with open(a.cmdline[1:]) as f:
            a.cmdline = f.read()
    a.cmdline = " ".join(a.cmdline.split())
    a.kernel, a.initrd = os.path.abspath(a.kernel), os.path.abspath(a.initrd)
    for p in (a.kernel, a.initrd):
        if not os.path.isfile(p):
            raise Fail(f"{p} not found (build the test guest: scripts/test-guest)")
    a.workdir = os.path.abspath(a.workdir)
    os.makedirs(a.workdir, exist_ok=True)
    a.console = os.path.join(a.workdir, "console.log")

    seed = make_seed(a.workdir)
    peer = (QmpPeer if a.peer == "qmp" else LibvirtPeer)(a, seed)
    console = Console(a.console)
    attach_ms, detach_ms, snapshot_ms = [], [], {}
    try:
        t_start = peer.start()
        t_up, _ = console.wait(["PLINTH-USERDATA exit=0", f"BENCH-SEEN {SEED_SERIAL}"], 0, BOOT_DEADLINE_S,
                               "boot", alive=peer.alive)
        boot_ms = (t_up - t_start) * 1000
        say(f"{a.peer}: guest up (PLINTH-USERDATA exit=0, watcher saw the seed) {boot_ms:.0f} ms after start")
        for i in range(a.iterations):
            path = volume(a.workdir, i)
            t0, t_att, att_info, end = peer.attach(i, path, console)
            t1, t_det, det_info = peer.detach(i, console)
            t_gone, _ = console.wait([f"BENCH-GONE BENCH{i}"], end, GONE_DEADLINE_S, f"detach {i}: guest",
                                     alive=peer.alive)
            attach_ms.append(round((t_att - t0) * 1000, 1))
            detach_ms.append(round((t_det - t1) * 1000, 1))
            att = ", ".join(f"{k} {v:.0f}" for k, v in att_info.items())
            det = ", ".join(f"{k} {v:.0f}" for k, v in det_info.items())
            say(f"{a.peer} #{i}: attach {attach_ms[-1]:.0f} ms ({att}); detach {detach_ms[-1]:.0f} ms ({det}; "
                f"BENCH-GONE read from the console by {(t_gone - t1) * 1000:.0f} ms)")
            os.unlink(path)
        n = a.iterations
        for gib in SNAPSHOT_GIB:
            for k in range(a.snapshot_iterations):
                i = n
                n += 1
                path = volume(a.workdir, i, f"{gib}G")
                _, _, _, end = peer.attach(i, path, console)
                t0, t1, overlay = peer.snapshot(i, path, gib)
                snapshot_ms.setdefault(str(gib), []).append(round((t1 - t0) * 1000, 1))
                peer.detach_snapshotted(i, console)
                console.wait([f"BENCH-GONE BENCH{i}"], end, GONE_DEADLINE_S, f"snapshot {i}: guest", alive=peer.alive)
                say(f"{a.peer} snapshot of {gib} GiB #{k}: {snapshot_ms[str(gib)][-1]:.1f} ms")
                for f in (path, overlay):
                    if os.path.exists(f):
                        os.unlink(f)
    finally:
        peer.stop()
        for i in range(a.iterations):
            try:
                os.unlink(os.path.join(a.workdir, f"vol{i}.qcow2"))
            except FileNotFoundError:
                pass
    print(json.dumps({
        "peer": a.peer,
        "iterations": a.iterations,
        "attach_ms": attach_ms,
        "detach_ms": detach_ms,
        "attach_p50": p_nearest(attach_ms, 50),
        "attach_p99": p_nearest(attach_ms, 99),
        "detach_p50": p_nearest(detach_ms, 50),
        "detach_p99": p_nearest(detach_ms, 99),
        "boot_ms": round(boot_ms),
        "snapshot_ms": snapshot_ms,
        "snapshot_p50": {g: p_nearest(v, 50) for g, v in snapshot_ms.items()},
    }))


def _sigterm(signum, frame):
    raise Fail(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, _sigterm)
    try:
        main()
    except Fail as e:
        print(f"peers: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
