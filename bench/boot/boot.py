#!/usr/bin/env python3
"""bench/boot driver: time from "asked to boot" to `PLINTH-GUEST-READY <id>` on the serial
console, for bare QEMU, libvirt and Plinth, interleaved round by round.

Run through bench/boot/run, which installs and starts what this needs (the test guest,
libvirt, Plinth) and passes the paths, URL and token. Standard library only.
See bench/boot/README.md for what is measured and why it is fair.
"""

import argparse
import datetime
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

POLL_S = 0.010  # the serial files are polled every 10 ms
BOOT_DEADLINE_S = 180.0  # one boot, asked -> READY
GONE_DEADLINE_S = 120.0  # one guest, asked to go -> gone
MARKER = "PLINTH-GUEST-READY"

# The guest, the same for all three ways (the Plinth shape is made from these).
VCPUS = 1
MEMORY_MIB = 256
DISK_GIB = 1
QEMU = "/usr/bin/qemu-system-x86_64"
QEMU_IMG = "/usr/bin/qemu-img"


def say(msg):
    print(f"bench/boot: {msg}", file=sys.stderr, flush=True)


def die(msg):
    print(f"bench/boot: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# --- what Plinth's agent runs ------------------------------------------------------------
#
# These two mirror crates/plinth-agent/src/runtime/qemu/:
#   qemu_argv()  = cmdline.rs `QemuArgs::argv()` for machine q35, accel tcg, a direct boot
#                  (kernel + initrd + the image's cmdline), no hugepages;
#   create_disk() = images.rs `create_disk()` for an image without a disk (a blank qcow2 of
#                  the shape's disk size, written to `.disk.qcow2.tmp`, then renamed).
# Keep them in step with those files (their unit test `q35_direct_boot_under_tcg` spells
# out the same argv).


def kernel_cmdline(image_cmdline, instance_id):
    """cmdline.rs `kernel_cmdline()` on q35: the image's words, then plinth.instance=."""
    return " ".join(image_cmdline.split() + [f"plinth.instance={instance_id}"])


def qemu_argv(instance_id, kernel, initrd, image_cmdline, disk, qmp_socket, pidfile, console_log,
              vcpus=VCPUS, memory_mib=MEMORY_MIB, disk_cache="none"):
    return [
        QEMU,
        "-name", f"guest={instance_id},debug-threads=on",
        "-machine", "q35", "-accel", "tcg", "-cpu", "max",
        "-smp", str(vcpus), "-m", f"{memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-shutdown",
        "-daemonize", "-pidfile", pidfile,
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-chardev", f"file,id=serial0,path={console_log},append=on",
        "-serial", "chardev:serial0",
        "-kernel", kernel, "-initrd", initrd,
        "-append", kernel_cmdline(image_cmdline, instance_id),
        "-drive", f"file={disk},if=none,id=disk0,format=qcow2,cache={disk_cache},aio=threads",
        "-device", "virtio-blk-pci,drive=disk0",
        "-device", "pvpanic",
    ]


def create_disk(overlay, disk_gib=DISK_GIB):
    tmp = os.path.join(os.path.dirname(overlay), ".disk.qcow2.tmp")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", tmp, f"{disk_gib}G"],
                   stdin=subprocess.DEVNULL, check=True)
    os.rename(tmp, overlay)


# --- the libvirt domain --------------------------------------------------------------------
#
# The same guest as qemu_argv(), as close as libvirt 9.0 allows (differences are listed in
# bench/boot/README.md): TCG (`type='qemu'`), q35, `cpu mode='maximum'` (= -cpu max), the
# same memory and vCPUs, a direct boot of the same kernel/initrd/cmdline, the same virtio
# disk (qcow2, cache=none, aio=threads) at pcie.0 slot 1, where QEMU puts it (no
# pcie-root-port), the serial console to a file opened with append=on, and no USB,
# memballoon, network or graphics.


def domain_xml(name, instance_id, kernel, initrd, image_cmdline, disk, console_log):
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <vcpu>{VCPUS}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{kernel_cmdline(image_cmdline, instance_id)}</cmdline>
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
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='threads'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='{console_log}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='{console_log}' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
    <panic model='isa'/>
  </devices>
</domain>
"""


# --- helpers -------------------------------------------------------------------------------


def wall(rfc3339):
    """An RFC 3339 time (the API's) as seconds since the epoch, like time.time()."""
    s = rfc3339.replace("Z", "+00:00")
    if "." in s:  # fromisoformat before 3.11 takes at most 6 fraction digits
        head, rest = s.split(".", 1)
        frac = "".join(ch for ch in rest if ch.isdigit())
        s = f"{head}.{frac[:6]:0<6}{rest[len(frac):]}"
    return datetime.datetime.fromisoformat(s).timestamp()


def wait_file_marker(path, marker, deadline, stop=None):
    """Polls `path` every POLL_S until it holds `marker`; answers time.monotonic() then
    (None after `deadline`, or once `stop` holds "stop")."""
    off, buf = 0, ""
    while stop is None or "stop" not in stop:
        try:
            with open(path, "rb") as f:
                f.seek(off)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            off += len(data)
            buf = buf[-len(marker):] + data.decode("utf-8", "replace")
            if marker in buf:
                return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
    return None


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def qmp_quit(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock_path)
    f = s.makefile("rwb")
    f.readline()  # greeting
    for cmd in ("qmp_capabilities", "quit"):
        f.write(json.dumps({"execute": cmd}).encode() + b"\n")
        f.flush()
        while True:  # skip events until the command's answer
            line = f.readline()
            if not line or b'"return"' in line or b'"error"' in line:
                break
    s.close()


def nearest_rank(sorted_xs, q):
    if not sorted_xs:
        return None
    k = max(1, -(-len(sorted_xs) * q // 100))  # ceil(n*q/100)
    return sorted_xs[int(k) - 1]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# --- the three ways ------------------------------------------------------------------------


class Bare:
    name = "bare-qemu"

    def __init__(self, a):
        self.a = a
        self.first_argv = None
        self.launch_ms = None
        self.up_ms = None

    def boot(self, tag):
        d = os.path.join(self.a.work, f"bare-{tag}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        iid = f"bench-bare-{tag}"
        disk, qmp = os.path.join(d, "disk.qcow2"), os.path.join(d, "qmp.sock")
        pidfile, console = os.path.join(d, "qemu.pid"), os.path.join(d, "console.log")
        argv = qemu_argv(iid, self.a.kernel, self.a.initrd, self.a.cmdline, disk, qmp, pidfile, console)
        if self.first_argv is None:
            self.first_argv = argv
        t0 = time.monotonic()
        create_disk(disk)
        self.launch_ms = (time.monotonic() - t0) * 1000  # when QEMU is spawned
        with open(os.path.join(d, "qemu.stderr"), "wb") as err:
            rc = subprocess.run(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err).returncode
        self.up_ms = (time.monotonic() - t0) * 1000  # the launcher exited: QEMU runs the guest
        if rc != 0:
            die(f"bare qemu failed to start ({rc}): {open(os.path.join(d, 'qemu.stderr')).read().strip()}")
        t1 = wait_file_marker(console, f"{MARKER} {iid}", t0 + BOOT_DEADLINE_S)
        self.stop(d, qmp, pidfile)
        if t1 is None:
            die(f"bare qemu: no '{MARKER} {iid}' in {console} within {BOOT_DEADLINE_S:.0f}s")
        shutil.rmtree(d, ignore_errors=True)
        return (t1 - t0) * 1000

    @staticmethod
    def stop(d, qmp, pidfile):
        try:
            pid = int(open(pidfile).read().strip())
        except (OSError, ValueError):
            return
        try:
            qmp_quit(qmp)
        except OSError:
            pass
        end = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.01)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.01)


class Libvirt:
    name = "libvirt"

    def __init__(self, a):
        self.a = a
        self.first_xml = None
        self.up_ms = None
        self.uri = a.libvirt_uri
        # What `virsh` costs on its own (process start + connect), for the notes.
        t = time.monotonic()
        subprocess.run(["virsh", "-q", "-c", self.uri, "uri"], stdout=subprocess.DEVNULL, check=True)
        self.virsh_ms = (time.monotonic() - t) * 1000

    def boot(self, tag):
        d = os.path.join(self.a.work, f"libvirt-{tag}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        name = f"plinth-bench-boot-{tag}"
        iid = f"bench-libvirt-{tag}"
        disk, console = os.path.join(d, "disk.qcow2"), os.path.join(d, "console.log")
        xml = domain_xml(name, iid, self.a.kernel, self.a.initrd, self.a.cmdline, disk, console)
        xml_path = os.path.join(d, "domain.xml")
        with open(xml_path, "w") as f:
            f.write(xml)
        if self.first_xml is None:
            self.first_xml = xml
        t0 = time.monotonic()
        create_disk(disk)
        r = subprocess.run(["virsh", "-q", "-c", self.uri, "create", xml_path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.up_ms = (time.monotonic() - t0) * 1000  # created and resumed: QEMU runs the guest
        if r.returncode != 0:
            die(f"virsh create failed: {r.stderr.decode().strip()}")
        t1 = wait_file_marker(console, f"{MARKER} {iid}", t0 + BOOT_DEADLINE_S)
        subprocess.run(["virsh", "-q", "-c", self.uri, "destroy", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        if t1 is None:
            die(f"libvirt: no '{MARKER} {iid}' in {console} within {BOOT_DEADLINE_S:.0f}s")
        log = f"/var/log/libvirt/qemu/{name}.log"
        if not os.path.exists(os.path.join(self.a.work, "libvirt-qemu-cmdline.txt")) and os.path.exists(log):
            shutil.copyfile(log, os.path.join(self.a.work, "libvirt-qemu-cmdline.txt"))
        for p in (log,):
            try:
                os.remove(p)
            except OSError:
                pass
        shutil.rmtree(d, ignore_errors=True)
        return (t1 - t0) * 1000


class Plinth:
    name = "plinth"

    def __init__(self, a):
        self.a = a
        u = urllib.parse.urlsplit(a.plinth_url)
        self.host, self.port = u.hostname, u.port
        # `plinth up` serves HTTPS with its own CA (data dir tls/ca.pem): trust only that.
        self.tls = ssl.create_default_context(cafile=a.plinth_ca) if u.scheme == "https" else None
        self.conn = None
        self.n = 0
        t = self.call("POST", "/v1/tenants", {"name": "bench-boot"}, want=(201,))
        p = self.call("POST", "/v1/projects", {"name": "boot", "tenant_id": t["id"]}, want=(201,))
        self.project = p["id"]
        self.call("POST", "/v1/shapes", {"name": a.plinth_shape, "vcpus": VCPUS, "memory_mib": MEMORY_MIB,
                                         "disk_gib": DISK_GIB}, want=(201,))

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.a.plinth_token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):  # one retry on a dropped keep-alive connection
            if self.conn is None:
                if self.tls:
                    self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=90, context=self.tls)
                else:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=90)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read()
                return r.status, (json.loads(text) if text else None)
            except (http.client.HTTPException, ConnectionError, socket.timeout):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise

    def call(self, method, path, body=None, want=(200,)):
        status, v = self.request(method, path, body)
        if status not in want:
            die(f"{method} {path}: {status} {v}")
        return v

    def create(self, name, retry_s=0):
        body = {"project_id": self.project, "name": name, "shape": self.a.plinth_shape,
                "image": self.a.plinth_image}
        end = time.monotonic() + retry_s
        while True:
            status, v = self.request("POST", "/v1/instances", body)
            if status in (201, 202):
                return v["instance"]["id"], v["operation"]["id"]
            # The local agent may not have registered its host yet (warm-up only).
            if status == 409 and time.monotonic() < end:
                time.sleep(0.5)
                continue
            die(f"POST /v1/instances: {status} {v}")

    def boot(self, tag, retry_s=0):
        self.n += 1
        name = f"boot-{tag}"
        t0, w0 = time.monotonic(), time.time()
        iid, op = self.create(name, retry_s)
        if retry_s:  # a warm-up that waited for the host is not a boot time
            t0, w0 = time.monotonic(), time.time()
        self.split = {"post_ms": (time.monotonic() - t0) * 1000}
        marker = f"{MARKER} {iid}"
        # Beside the API: when the marker is in the agent's serial log file, polled like the
        # other two ways' files, to split Plinth's time into the boot and the console's way
        # from that file to the API.
        in_file = {}
        pattern = os.path.join(self.a.plinth_data, "agent", "hosts", "*", "qemu", iid, "console.log")
        deadline_f = t0 + BOOT_DEADLINE_S + retry_s

        def follow_file():
            paths = []
            while not paths and time.monotonic() < deadline_f and "stop" not in in_file:
                paths = glob.glob(pattern)
                if not paths:
                    time.sleep(POLL_S)
            if paths:
                t = wait_file_marker(paths[0], marker, deadline_f, stop=in_file)
                if t is not None:
                    in_file["t"] = t
        follower = threading.Thread(target=follow_file, daemon=True)
        follower.start()
        off, buf, t1 = 0, "", None
        deadline = t0 + BOOT_DEADLINE_S + retry_s
        while time.monotonic() < deadline:
            wait = max(1, min(30, int(deadline - time.monotonic())))
            status, v = self.request("GET", f"/v1/instances/{iid}/console?offset={off}&wait={wait}")
            if status != 200:
                die(f"GET console of {iid}: {status} {v}")
            if v["data"]:
                buf = buf[-len(marker):] + v["data"]
                off = v["next_offset"]
                if marker in buf:
                    t1 = time.monotonic()
                    break
            else:
                st = self.call("GET", f"/v1/instances/{iid}")["state"]
                if st in ("failed", "crashed", "deleted", "deleting", "stopped"):
                    die(f"plinth: instance {iid} is {st} before READY")
        follower.join(timeout=1)
        in_file["stop"] = True
        if "t" in in_file:
            self.split["console_ms"] = (t1 - in_file["t"]) * 1000
        try:
            timings = self.call("GET", f"/v1/operations/{op}")["timings"]
            for step in timings:
                for ph in step.get("host", []):
                    if ph["phase"] == "qemu_launch" and "launch_ms" not in self.split:
                        self.split["launch_ms"] = (wall(ph["started_at"]) - w0) * 1000
                        self.split["up_ms"] = self.split["launch_ms"] + ph["took_ms"]
            self.split["steps"] = timings
        except (KeyError, TypeError, ValueError):
            pass
        self.delete(iid)
        if t1 is None:
            die(f"plinth: no '{marker}' on the console of {iid} within {BOOT_DEADLINE_S:.0f}s")
        return (t1 - t0) * 1000

    def delete(self, iid):
        status, v = self.request("DELETE", f"/v1/instances/{iid}")
        if status not in (202, 204, 404):
            die(f"DELETE /v1/instances/{iid}: {status} {v}")
        end = time.monotonic() + GONE_DEADLINE_S
        while time.monotonic() < end:
            status, v = self.request("GET", f"/v1/instances/{iid}")
            if status == 404 or (status == 200 and v.get("state") == "deleted"):
                return
            time.sleep(0.1)
        die(f"plinth: instance {iid} still there {GONE_DEADLINE_S:.0f}s after DELETE")


# --- main ----------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--guest-dir", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--libvirt-uri", default="qemu:///system")
    ap.add_argument("--plinth-url")
    ap.add_argument("--plinth-token-file")
    ap.add_argument("--plinth-ca", help="the CA certificate (PEM) plinth up's HTTPS chains to")
    ap.add_argument("--plinth-data", help="plinth up's data directory (its agent's serial logs)")
    ap.add_argument("--plinth-image", default="test-guest")
    ap.add_argument("--plinth-shape", default="bench-boot")
    a = ap.parse_args()
    if a.runs < 1:
        die("--runs must be at least 1")
    a.kernel = os.path.join(a.guest_dir, "vmlinux")
    a.initrd = os.path.join(a.guest_dir, "initramfs.cpio.gz")
    a.cmdline = open(os.path.join(a.guest_dir, "cmdline")).read().strip()
    if a.plinth_url:
        a.plinth_token = open(a.plinth_token_file).read().strip()
    os.makedirs(a.work, exist_ok=True)

    ways = [Bare(a), Libvirt(a)]
    if a.plinth_url:
        ways.append(Plinth(a))
    results = {w.name: [] for w in ways}
    splits = {"bare_launch_ms": [], "post_ms": [], "launch_ms": [], "console_ms": []}
    # Per round, when each way's QEMU was up and running the guest (ms after asked), and
    # Plinth's READY from its serial file to the API.
    ups = []
    raw = open(os.path.join(a.work, "runs.jsonl"), "w")

    for i in range(a.warmup):
        for w in ways:
            retry = 120 if isinstance(w, Plinth) and i == 0 else 0
            ms = w.boot(f"w{i}", retry) if retry else w.boot(f"w{i}")
            say(f"warm-up {i + 1}/{a.warmup} {w.name}: {ms:.0f} ms (not counted)")
    for i in range(a.runs):
        # Interleaved: run i of every way before run i+1; the order rotates each round so
        # no way always goes first (right after the previous guest's teardown).
        order = ways[i % len(ways):] + ways[:i % len(ways)]
        up = {}
        ups.append(up)
        for w in order:
            ms = w.boot(str(i + 1))
            results[w.name].append(ms)
            row = {"round": i + 1, "way": w.name, "ms": round(ms, 1)}
            if isinstance(w, (Bare, Libvirt)):
                up[w.name] = w.up_ms
                row["up_ms"] = round(w.up_ms, 2)
            if isinstance(w, Bare):
                up["bare-launch"] = w.launch_ms
                splits["bare_launch_ms"].append(w.launch_ms)
                row["launch_ms"] = round(w.launch_ms, 2)
            if isinstance(w, Plinth):
                for k in ("post_ms", "launch_ms", "console_ms"):
                    if k in w.split:
                        splits[k].append(w.split[k])
                if "launch_ms" in w.split and "console_ms" in w.split:
                    up["plinth-launch"] = w.split["launch_ms"] + w.split["console_ms"]
                row.update(w.split)
            raw.write(json.dumps(row) + "\n")
            raw.flush()
            say(f"run {i + 1}/{a.runs} {w.name}: {ms:.0f} ms")
    raw.close()

    with open(os.path.join(a.work, "qemu-argv.json"), "w") as f:
        json.dump(ways[0].first_argv, f, indent=1)
    with open(os.path.join(a.work, "domain.xml"), "w") as f:
        f.write(ways[1].first_xml)

    print(f"boot time, asked -> '{MARKER} <id>' on the serial console; {a.runs} runs each "
          f"(+{a.warmup} warm-up), interleaved; TCG, q35, {VCPUS} vCPU, {MEMORY_MIB} MiB")
    print("%-10s %5s %10s %8s %8s %8s" % ("way", "runs", "median ms", "p90 ms", "min ms", "max ms"))
    med = {}
    for w in ways:
        xs = sorted(results[w.name])
        med[w.name] = median(xs)
        print("%-10s %5d %10.0f %8.0f %8.0f %8.0f" % (w.name, len(xs), med[w.name], nearest_rank(xs, 90),
                                                      xs[0], xs[-1]))
    bare, lv = med["bare-qemu"], med["libvirt"]

    def paired(x, y):  # median over rounds of (x_i - y_i)
        return median([p - q for p, q in zip(results[x], results[y])])

    print(f"libvirt over bare qemu: {paired('libvirt', 'bare-qemu'):+.0f} ms (median of per-round differences), "
          f"{lv / bare:.2f}x of medians; virsh alone (start + connect): {ways[1].virsh_ms:.0f} ms")
    if "plinth" in med:
        pl = med["plinth"]
        over = paired("plinth", "bare-qemu")
        print(f"plinth over bare qemu: {over:+.0f} ms (median of per-round differences), "
              f"{pl - bare:+.0f} ms (difference of medians), {pl / bare:.2f}x")
        print(f"plinth vs libvirt: {paired('plinth', 'libvirt'):+.0f} ms (median of per-round differences), "
              f"{pl / lv:.2f}x")
        # Where Plinth's time goes, apart from the guest's own boot (medians over the runs;
        # each less noisy than the whole boot, which TCG on shared cores makes vary by ±15 %).
        m = {k: median(v) for k, v in splits.items() if v}
        if "launch_ms" in m and "bare_launch_ms" in m:
            print(f"plinth split (medians): POST answered {m['post_ms']:.1f} ms; QEMU started at "
                  f"{m['launch_ms']:.1f} ms (bare qemu: {m['bare_launch_ms']:.1f} ms, both after the disk "
                  f"is made): {m['launch_ms'] - m['bare_launch_ms']:+.1f} ms before the guest runs")
        if "console_ms" in m:
            print(f"plinth split (medians): READY in the serial log file -> read through the API: "
                  f"{m['console_ms']:+.1f} ms (the file is polled every {POLL_S * 1000:.0f} ms, as for the "
                  f"other two, so this is understated by 0-{POLL_S * 1000:.0f} ms)")
        # The figure: each way's overhead over bare QEMU without the guest's own boot in it
        # (the same for all three, but ±15 % under TCG on shared cores: seconds, which drown
        # milliseconds in whole-boot differences). Medians over the rounds of per-round
        # differences with bare QEMU of:
        # - Plinth: when its agent spawns QEMU (the `qemu_launch` phase), plus READY's way
        #   from the serial file to the API (the file polled as for the other two). After the
        #   spawn Plinth runs bare QEMU's very command line, so QEMU's own start-up (100-300 ms
        #   here, and noisy) is left out of both sides;
        # - libvirt: when `virsh create` returns (QEMU started, set up over QMP, resumed),
        #   against when bare QEMU's launcher exits: libvirt changes QEMU's start-up, so it
        #   stays in, and this one is noisier.
        p_over = median([u["plinth-launch"] - u["bare-launch"] for u in ups if "plinth-launch" in u])
        l_over = median([u["libvirt"] - u["bare-qemu"] for u in ups if "libvirt" in u and "bare-qemu" in u])
        if p_over is None or l_over is None:
            die("plinth: no operation timings to split its boot with (is the server this commit's?)")
        print(f"overhead without the guest's boot (medians of per-round differences with bare qemu): plinth "
              f"{p_over:+.1f} ms (to spawning QEMU, plus reading READY), libvirt {l_over:+.1f} ms (to the guest "
              f"running)")
        # Plinth's overhead over libvirt's, both over bare QEMU: lower is better.
        ratio = f"{p_over / l_over:.2f}x" if l_over > 0 else "n/a"
        print(f"boot: {p_over:+.0f} ms over bare qemu ({ratio} vs libvirt)")
    else:
        print(f"boot: skipped plinth; bare qemu {bare:.0f} ms, libvirt {lv:.0f} ms")


if __name__ == "__main__":
    main()
