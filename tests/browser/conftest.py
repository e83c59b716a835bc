"""Fixtures for the web console's real-browser tests (Playwright against Debian's Chromium).

- `plinth` (session): `target/debug/plinth up` on a fresh temporary data directory and a
  free loopback port (embedded SQLite, HTTPS with the server's own CA, the local agent and
  the demo), ready when `/readyz` answers through the CA and the local host is available.
  It exposes `url`, `operator_token`, `ca_cert`, `hostname`, `host_id` and `cli(...)` (the
  CLI as the operator). At the end it stops the server (SIGTERM, then SIGKILL of its
  process group), any QEMU guest it left (daemonized guests leave the group and outlive
  the agent) and its agent's tenant-network namespaces, and prints the server's log when
  a test failed.
- `browser_type_launch_args`: Debian's /usr/bin/chromium, headless, with the network
  chatter (background networking, component updates, sync, QUIC) off.
- `base_url`, `browser_context_args`: the server's URL, `ignore_https_errors` (the server's
  certificate chains to its own CA, which the browser does not know). Chromium keeps the
  `Secure`/`__Host-` session cookie under ignored certificate errors on 127.0.0.1;
  `test_login.py` checks the cookie as stored.

Environment: PLINTH_BIN (default target/debug/plinth), PLINTH_GUEST_DIR (default
`scripts/test-guest --print-dir`), PLINTH_BROWSER_KEEP=1 keeps the data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import expect

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("PLINTH_BIN", REPO / "target" / "debug" / "plinth"))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Deadlines (seconds). A debug build on a busy 2-core machine: generous, never a bare sleep.
READY_DEADLINE = 60
HOST_DEADLINE = 120
STOP_DEADLINE = 15
# Where agents keep their VPC namespaces' files (agent_host.rs: NetworkConfig.state_dir).
NETWORK_STATE = "/run/plinth/network"
# The CLI's own settings, which must come from the fixture only.
CLI_ENV = ("PLINTH_SERVER", "PLINTH_TOKEN", "PLINTH_CA_CERT", "PLINTH_CONFIG")

# Assertions wait this long (a debug build under load); actions keep Playwright's 30 s.
expect.set_options(timeout=15_000)

# The server's log, printed in the terminal summary when a test failed.
_report: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    # `timeout` (scripts/browser-test) sends SIGTERM: make it an interrupt, so fixtures
    # tear down and the server and its guests stop.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_terminal_summary(terminalreporter) -> None:
    log = _report.get("log")
    if log is not None:
        terminalreporter.write_sep("=", f"plinth up's log ({_report.get('path')})")
        terminalreporter.write_line(log.rstrip())
    if "kept" in _report:
        terminalreporter.write_line(f"kept the server's data and log in {_report['kept']}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _guest_dir() -> str | None:
    if os.environ.get("PLINTH_GUEST_DIR"):
        return os.environ["PLINTH_GUEST_DIR"]
    try:
        out = subprocess.run(
            [str(REPO / "scripts" / "test-guest"), "--print-dir"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _local_hostname() -> str:
    """The name `plinth up`'s agent registers this machine under (agent_host::local_hostname)."""
    try:
        raw = Path("/proc/sys/kernel/hostname").read_text()
    except OSError:
        raw = "localhost"
    first = raw.strip().split(".")[0]
    s = "".join(c.lower() if c.isascii() and c.isalnum() else "-" for c in first)[:63].strip("-")
    return s or "localhost"


def _pids_mentioning(needle: str) -> list[int]:
    """Processes whose command line names `needle` (the data dir): the daemonized QEMU
    guests of this server's agent, which left its process group."""
    me = os.getpid()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append(int(d.name))
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Plinth:
    """A running `plinth up`."""

    url: str
    operator_token: str
    ca_cert: Path
    data_dir: Path
    log_path: Path
    profile: Path
    proc: subprocess.Popen = field(repr=False)
    hostname: str = ""
    host_id: str = ""

    def cli_env(self, token: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
        env.update(
            PLINTH_SERVER=self.url,
            PLINTH_TOKEN=token or self.operator_token,
            PLINTH_CA_CERT=str(self.ca_cert),
            # Never the user's ~/.config/plinth/profile.toml.
            PLINTH_CONFIG=str(self.profile),
            NO_COLOR="1",
        )
        return env

    def cli(self, *args: str, token: str | None = None, check: bool = True, timeout: float = 60):
        """Runs `plinth ARGS` as the operator (or as `token`); the CompletedProcess."""
        done = subprocess.run(
            [str(BIN), *args],
            env=self.cli_env(token),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"plinth {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def cli_json(self, *args: str, **kw):
        """`plinth ARGS -o json`, parsed."""
        return json.loads(self.cli(*args, "-o", "json", **kw).stdout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"


def _ready(url: str, ca: Path) -> bool:
    if not ca.exists():
        return False
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=5) as r:
            return r.status == 200 and json.load(r).get("status") == "ok"
    except (OSError, ssl.SSLError, urllib.error.URLError, ValueError):
        return False


def _start(tmp: Path, attempt: int) -> Plinth:
    port = _free_port()
    data = tmp / f"data-{attempt}"
    log_path = tmp / f"plinth-up-{attempt}.log"
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
    env["PLINTH_CONFIG"] = str(tmp / "profile.toml")  # `plinth up` writes the CLI profile
    env["NO_COLOR"] = "1"
    guest = _guest_dir()
    if guest:
        env["PLINTH_GUEST_DIR"] = guest
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(BIN), "up", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp,
        start_new_session=True,  # its own process group, stopped as one
    )
    log.close()
    return Plinth(
        url=f"https://127.0.0.1:{port}",
        operator_token="",
        ca_cert=data / "tls" / "ca.pem",
        data_dir=data,
        log_path=log_path,
        profile=tmp / "profile.toml",
        proc=proc,
    )


def _wait_ready(p: Plinth) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while not _ready(p.url, p.ca_cert):
        if p.proc.poll() is not None:
            raise RuntimeError(f"plinth up exited {p.proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"plinth up was not ready at {p.url}/readyz within {READY_DEADLINE} s")
        time.sleep(0.1)
    token_file = p.data_dir / "operator-token"
    p.operator_token = token_file.read_text().strip()
    if not p.operator_token.startswith("plt_"):
        raise RuntimeError(f"{token_file} holds no operator token")
    # The local agent enrols a little later (after its KVM probe): wait for the host.
    p.hostname = _local_hostname()
    deadline = time.monotonic() + HOST_DEADLINE
    while True:
        hosts = p.cli_json("host", "list")["items"]
        mine = [h for h in hosts if h["name"] == p.hostname]
        if mine and mine[0]["state"] == "available":
            p.host_id = mine[0]["id"]
            return
        if p.proc.poll() is not None:
            raise RuntimeError(f"plinth up exited {p.proc.returncode} before host {p.hostname} was available")
        if time.monotonic() > deadline:
            raise RuntimeError(f"host {p.hostname} not available within {HOST_DEADLINE} s: {hosts}")
        time.sleep(0.2)


def _remove_tenant_networks(data_dir: Path) -> list[str]:
    """Tears down the VPC namespaces this data directory's agent made (as the agent's own
    `NetworkConfig::teardown` does: dnsmasq, the namespace, its files), found by the owner
    file it writes in each (`/run/plinth/network/<ns>/owner`, naming its host directory).
    Namespaces of other agents on this machine are left alone."""
    notes = []
    root = Path(NETWORK_STATE)
    if not root.is_dir():
        return notes
    for d in sorted(root.iterdir()):
        try:
            owner = (d / "owner").read_text()
        except OSError:
            continue
        if not owner.startswith(str(data_dir) + os.sep):
            continue
        pids = set()
        for pidfile in d.glob("*.pid"):
            try:
                pids.add(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                pass
        inside = subprocess.run(["ip", "netns", "pids", d.name], capture_output=True, text=True)
        pids.update(int(x) for x in inside.stdout.split() if x.isdigit())
        _signal_all(sorted(pids), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", d.name], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        notes.append(f"removed tenant network namespace {d.name} (processes {sorted(pids)})")
    return notes


def _stop(p: Plinth) -> list[str]:
    """Stops the server, its process group and its guests; what had to be killed."""
    notes = []
    if p.proc.poll() is None:
        p.proc.send_signal(signal.SIGTERM)
        try:
            p.proc.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            notes.append(f"plinth up did not stop within {STOP_DEADLINE} s of SIGTERM: SIGKILL")
    # The rest of the group (children such as a KVM probe), whether or not it stopped.
    try:
        os.killpg(p.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.proc.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        notes.append(f"plinth up (pid {p.proc.pid}) survived SIGKILL")
    # Guests are started with `-daemonize` and keep running when the agent stops: the
    # ones this data directory's agent started name it on their command line.
    guests = _pids_mentioning(str(p.data_dir))
    if guests:
        notes.append(f"stopping processes left under {p.data_dir}: {guests}")
        _signal_all(guests, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE
        while any(_alive(g) for g in guests) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_all([g for g in guests if _alive(g)], signal.SIGKILL)
    # So do the tenant networks of their NICs (namespaces, dnsmasq).
    notes += _remove_tenant_networks(p.data_dir)
    return notes


@pytest.fixture(scope="session")
def plinth(request: pytest.FixtureRequest):
    if not BIN.exists():
        pytest.exit(f"{BIN} is missing: build it first (cargo build -p plinth)", returncode=2)
    tmp = Path(tempfile.mkdtemp(prefix="plinth-browser-"))
    server = None
    try:
        for attempt in range(3):
            server = _start(tmp, attempt)
            try:
                _wait_ready(server)
                break
            except RuntimeError as e:
                log = server.log()
                _stop(server)
                # Another process took the free port between our probe and the bind: retry.
                if "in use" in log and attempt < 2:
                    continue
                raise RuntimeError(f"{e}\n--- {server.log_path} ---\n{log}") from None
        yield server
    finally:
        notes = _stop(server) if server is not None else []
        failed = request.session.testsfailed > 0
        if server is not None and (failed or notes):
            _report["log"] = server.log() + "".join(f"\n(fixture) {n}" for n in notes)
            _report["path"] = str(server.log_path)
        if failed or os.environ.get("PLINTH_BROWSER_KEEP") == "1":
            _report["kept"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def base_url(plinth) -> str:
    """The server: `page.goto("/login")`. (Also replaces pytest-playwright's fallback
    `base_url`, an instance-method fixture pytest 9 warns about.)"""
    return plinth.url


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args, base_url):
    return {**browser_context_args, "base_url": base_url, "ignore_https_errors": True}


@dataclass
class Tenant:
    """A tenant-admin of `plinth up`'s demo tenant, with its API token."""

    token: str
    project_id: str
    user_id: str


@pytest.fixture(scope="session")
def tenant(plinth) -> Tenant:
    """`alice`, tenant-admin of the demo tenant (made through the CLI, as an operator would)."""
    user = plinth.cli_json("user", "create", "alice", "--tenant", "demo")
    plinth.cli("role-binding", "create", "--user", user["id"], "--role", "tenant-admin")
    token = plinth.cli_json("token", "create", "alice-browser", "--user", user["id"])["secret"]
    project = plinth.cli_json("project", "get", "demo")
    return Tenant(token=token, project_id=project["id"], user_id=user["id"])
