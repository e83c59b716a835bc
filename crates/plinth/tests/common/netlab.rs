//! A network lab on one machine: "hosts" are network namespaces, each running its own
//! `plinth agent`, joined by veths to a fabric bridge (the underlay); namespace "guests"
//! plug into a NIC's veth; probes are real TCP connections and pings.
//!
//! Layout for lab number `k` (distinct per test so tests can run side by side):
//! - `{p}fab`: the fabric namespace, bridge `ul` (no address).
//! - `{p}h{i}`: host `i` (1-based), `eth0` = 192.168.{k}.{i}/24 on the fabric.
//! - the machine's namespace gets one veth `{p}ctl` on the fabric with 192.168.{k}.254/24:
//!   the server listens there so agents reach it (no other route, nothing to the uplink).
//! - guests: `{p}g{name}`.
//! - each host has a bridge `pvd` (no address), its agent's `--provider-bridge`; with
//!   [`NetLab::provider`], `{p}pv` is the internet: bridge `pbr` holding 198.51.100.1/24
//!   (the floating pool's gateway) with a veth to each host's `pvd`, and
//!   [`PROVIDER_SERVER`] (203.0.113.10) on its loopback for servers. Nothing routes
//!   anywhere else.
//!
//! Everything is deleted on drop (and stale leftovers of the same prefix at start).
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a command; panics with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs a command and returns its output, whatever its status.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs `args` inside namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

/// `python3 -c code` in namespace `ns`, detached from the test's stdio (`what` names it in
/// the panic when it cannot start).
pub fn spawn_python(ns: &str, code: &str, what: &str) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", code])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

/// Waits (10 s at most) until something listens on TCP `port` in namespace `ns`.
pub fn wait_listening(ns: &str, port: u16, what: &str) {
    wait(&format!("{what} to listen"), Duration::from_secs(10), || {
        let ss = in_ns(ns, &["ss", "-ltnH", &format!("sport = :{port}")]);
        (!String::from_utf8_lossy(&ss.stdout).trim().is_empty()).then_some(())
    });
}

/// Whether this process may build the lab (root, with `ip`).
pub fn can_run() -> bool {
    let uid = run(&["id", "-u"]);
    String::from_utf8_lossy(&uid.stdout).trim() == "0" && run(&["ip", "-V"]).status.success()
}

/// Each host's provider bridge (the agents' `--provider-bridge`).
pub const PROVIDER_BRIDGE: &str = "pvd";
/// The provider router's address on the hosts' provider link: the floating pool's gateway.
pub const PROVIDER_GATEWAY: &str = "198.51.100.1";
/// Where the provider's servers listen ("an address on the internet").
pub const PROVIDER_SERVER: &str = "203.0.113.10";

pub struct NetLab {
    pub prefix: String,
    pub k: u8,
    pub hosts: usize,
    /// The agents' `--datapath` (`linux-bridge` unless a test sets another).
    pub datapath: &'static str,
    guests: Vec<String>,
}

impl NetLab {
    /// Builds fabric, `hosts` host namespaces and the control veth.
    pub fn new(prefix: &str, k: u8, hosts: usize) -> NetLab {
        let lab = NetLab { prefix: prefix.to_string(), k, hosts, datapath: "linux-bridge", guests: vec![] };
        lab.clean();
        let p = prefix;
        let fab = format!("{p}fab");
        sh(&["ip", "netns", "add", &fab]);
        sh(&["ip", "-n", &fab, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &fab, "link", "add", "ul", "type", "bridge"]);
        sh(&["ip", "-n", &fab, "link", "set", "ul", "up"]);
        // The control veth: one end here (the server's address), one on the fabric.
        let ctl = format!("{p}ctl");
        sh(&["ip", "link", "add", &ctl, "type", "veth", "peer", "name", "ctlf", "netns", &fab]);
        sh(&["ip", "addr", "add", &format!("{}/24", lab.server_ip()), "dev", &ctl]);
        sh(&["ip", "link", "set", &ctl, "up"]);
        sh(&["ip", "-n", &fab, "link", "set", "ctlf", "master", "ul", "up"]);
        for i in 1..=hosts {
            let h = lab.host(i);
            sh(&["ip", "netns", "add", &h]);
            sh(&["ip", "-n", &h, "link", "set", "lo", "up"]);
            let far = format!("h{i}");
            sh(&["ip", "-n", &h, "link", "add", "eth0", "type", "veth", "peer", "name", &far, "netns", &fab]);
            sh(&["ip", "-n", &h, "addr", "add", &format!("{}/24", lab.underlay(i)), "dev", "eth0"]);
            sh(&["ip", "-n", &h, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &fab, "link", "set", &far, "master", "ul", "up"]);
            sh(&["ip", "-n", &h, "link", "add", PROVIDER_BRIDGE, "type", "bridge"]);
            sh(&["ip", "-n", &h, "link", "set", PROVIDER_BRIDGE, "up"]);
        }
        lab
    }

    /// The provider network ("the internet"): see the module's doc. Returns its namespace.
    pub fn provider(&self) -> String {
        let pv = format!("{}pv", self.prefix);
        sh(&["ip", "netns", "add", &pv]);
        sh(&["ip", "-n", &pv, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &pv, "addr", "add", &format!("{PROVIDER_SERVER}/32"), "dev", "lo"]);
        sh(&["ip", "-n", &pv, "link", "add", "pbr", "type", "bridge"]);
        sh(&["ip", "-n", &pv, "addr", "add", &format!("{PROVIDER_GATEWAY}/24"), "dev", "pbr"]);
        sh(&["ip", "-n", &pv, "link", "set", "pbr", "up"]);
        // A router: traffic between two public addresses turns around here.
        sh(&["ip", "netns", "exec", &pv, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        // What the provider starts comes from its server address (as from the internet).
        let net =
            format!("{}/24", PROVIDER_GATEWAY.rsplit_once('.').map(|(n, _)| format!("{n}.0")).unwrap_or_default());
        sh(&["ip", "-n", &pv, "route", "replace", &net, "dev", "pbr", "src", PROVIDER_SERVER]);
        for i in 1..=self.hosts {
            let h = self.host(i);
            let far = format!("h{i}");
            sh(&["ip", "-n", &h, "link", "add", "pvl", "type", "veth", "peer", "name", &far, "netns", &pv]);
            sh(&["ip", "-n", &h, "link", "set", "pvl", "master", PROVIDER_BRIDGE, "up"]);
            sh(&["ip", "-n", &pv, "link", "set", &far, "master", "pbr", "up"]);
        }
        pv
    }

    /// The address the server listens on.
    pub fn server_ip(&self) -> String {
        format!("192.168.{}.254", self.k)
    }

    /// Host `i`'s namespace.
    pub fn host(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// Host `i`'s underlay address (its VTEP).
    pub fn underlay(&self, i: usize) -> String {
        format!("192.168.{}.{i}", self.k)
    }

    /// The netns prefix host `i`'s agent uses for VPC namespaces.
    pub fn vpc_prefix(&self, i: usize) -> String {
        format!("{}{i}v", self.prefix)
    }

    /// The namespace of VPC `vni` on host `i`.
    pub fn vpc_ns(&self, i: usize, vni: u64) -> String {
        format!("{}{vni}", self.vpc_prefix(i))
    }

    /// Where NIC `device` of VPC `vni` has its port on host `i`: (namespace, link). The
    /// Linux bridge keeps it in the VPC namespace under the device's name, Open vSwitch in
    /// the host's namespace as `v<vni hex>-<device>`.
    pub fn nic_port(&self, i: usize, vni: u64, device: &str) -> (String, String) {
        match self.datapath {
            "openvswitch" => (self.host(i), format!("v{vni:x}-{device}")),
            _ => (self.vpc_ns(i, vni), device.to_owned()),
        }
    }

    /// Plugs a namespace guest into the veth NIC `device` of VPC `vni` on host `i`: its
    /// far end (`{device}g`) moves into a new namespace as `eth0`, with the NIC's MAC,
    /// `addr/prefix` and a default route via `gateway`. Returns the guest's namespace.
    #[allow(clippy::too_many_arguments)]
    pub fn plug_guest(
        &mut self,
        name: &str,
        i: usize,
        vni: u64,
        device: &str,
        mac: &str,
        addr_prefix: &str,
        gateway: &str,
    ) -> String {
        let g = format!("{}g{name}", self.prefix);
        let _ = run(&["ip", "netns", "del", &g]);
        sh(&["ip", "netns", "add", &g]);
        self.guests.push(g.clone());
        sh(&["ip", "-n", &g, "link", "set", "lo", "up"]);
        let vpc = self.vpc_ns(i, vni);
        let far = format!("{device}g");
        wait("the NIC's veth in the VPC namespace", Duration::from_secs(30), || {
            run(&["ip", "-n", &vpc, "link", "show", &far]).status.success().then_some(())
        });
        sh(&["ip", "-n", &vpc, "link", "set", &far, "netns", &g]);
        sh(&["ip", "-n", &g, "link", "set", &far, "name", "eth0"]);
        sh(&["ip", "-n", &g, "link", "set", "eth0", "address", mac]);
        sh(&["ip", "-n", &g, "addr", "add", addr_prefix, "dev", "eth0"]);
        sh(&["ip", "-n", &g, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &g, "route", "add", "default", "via", gateway]);
        g
    }

    /// Deletes every namespace and link of this lab's prefix, and kills the DHCP servers
    /// and Open vSwitch daemons its agents started (their files are under
    /// `/run/plinth/network/{prefix}…`, removed too).
    pub fn clean(&self) {
        let p = &self.prefix;
        let _ = run(&["pkill", "-9", "-f", &format!("/run/plinth/network/{p}")]);
        if let Ok(dir) = std::fs::read_dir("/run/plinth/network") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(p.as_str()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let _ = run(&["ip", "link", "del", &format!("{p}ctl")]);
        let list = run(&["ip", "netns", "list"]);
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name.starts_with(p.as_str()) {
                // Processes left in it (dnsmasq, probes) go with it.
                for pid in String::from_utf8_lossy(&run(&["ip", "netns", "pids", name]).stdout).split_whitespace() {
                    let _ = run(&["kill", "-9", pid]);
                }
                let _ = run(&["ip", "netns", "del", name]);
            }
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if std::env::var_os("PLINTH_KEEP_NETLAB").is_none() {
            self.clean();
        }
    }
}

/// Polls `f` until it gives a value, or panics after `deadline`.
pub fn wait<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// A python3 server in a namespace, listening on a port before it is handed out; killed on
/// drop (or with its namespace).
pub struct PyServer(std::process::Child);

impl PyServer {
    /// Runs `code` in `ns` and waits until something listens on `port`.
    pub fn start(ns: &str, port: u16, code: &str, what: &str) -> PyServer {
        let server = PyServer(spawn_python(ns, code, what));
        wait_listening(ns, port, what);
        server
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP echo server in `ns` on `port`.
pub struct Echo(PyServer);

impl Echo {
    pub fn start(ns: &str, port: u16) -> Echo {
        let code = format!(
            "import socket,threading\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0',{port})); s.listen(64)\n\
             def h(c):\n\
             \x20   try:\n\
             \x20       while True:\n\
             \x20           d=c.recv(65536)\n\
             \x20           if not d: break\n\
             \x20           c.sendall(d)\n\
             \x20   except Exception: pass\n\
             \x20   c.close()\n\
             while True:\n\
             \x20   c,_=s.accept(); threading.Thread(target=h,args=(c,),daemon=True).start()\n"
        );
        Echo(PyServer::start(ns, port, &code, "the echo server"))
    }
}

/// Connects from `ns` to `ip:port` within `timeout`, sends a payload of `size` bytes and
/// reads it back (sending and reading at once: an echo of a payload larger than the socket
/// buffers would otherwise block both ends). True only when the whole payload came back
/// intact within `timeout`.
pub fn tcp_ok(ns: &str, ip: &str, port: u16, size: usize, timeout: Duration) -> bool {
    let code = format!(
        "import socket,sys,os,threading\n\
         d=os.urandom({size})\n\
         s=socket.create_connection(('{ip}',{port}),timeout={t})\n\
         def send():\n\
         \x20   try:\n\
         \x20       s.sendall(d); s.shutdown(socket.SHUT_WR)\n\
         \x20   except Exception: pass\n\
         threading.Thread(target=send,daemon=True).start()\n\
         got=bytearray()\n\
         while len(got)<len(d):\n\
         \x20   b=s.recv(65536)\n\
         \x20   if not b: break\n\
         \x20   got+=b\n\
         sys.exit(0 if bytes(got)==d else 3)\n",
        t = timeout.as_secs_f64()
    );
    in_ns(ns, &["python3", "-c", &code]).status.success()
}

/// ICMP echoes from `ns` to `ip` with a payload of `size` bytes (any reply counts); `df`
/// forbids fragmentation.
pub fn ping_ok(ns: &str, ip: &str, size: usize, df: bool) -> bool {
    let s = size.to_string();
    // Three echoes 0.2 s apart, success on any reply: one lost packet on a loaded machine
    // is not a verdict.
    let mut args = vec!["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", &s];
    if df {
        args.extend(["-M", "do"]);
    }
    args.push(ip);
    in_ns(ns, &args).status.success()
}

/// Whether a TCP connection from `ns` to `ip:port` is accepted within 2 s.
pub fn tcp_open(ns: &str, ip: &str, port: u16) -> bool {
    let code = format!("import socket\nsocket.create_connection(('{ip}',{port}),timeout=2).close()\n");
    in_ns(ns, &["python3", "-c", &code]).status.success()
}

/// A long-lived TCP connection from `ns` to an echo server at `ip:port`: it sends one byte
/// every 100 ms and counts the echoes that come back (in a file the test reads). A flow
/// that stops passing data stops counting.
pub struct Flow {
    child: std::process::Child,
    count: std::path::PathBuf,
}

impl Flow {
    pub fn start(ns: &str, ip: &str, port: u16, dir: &std::path::Path, name: &str) -> Flow {
        let count = dir.join(format!("flow-{name}"));
        let code = format!(
            "import socket,time\n\
             s=socket.create_connection(('{ip}',{port}),timeout=3)\n\
             s.settimeout(0.3)\n\
             n=0\n\
             while True:\n\
             \x20   s.sendall(b'x')\n\
             \x20   try:\n\
             \x20       if s.recv(1): n+=1\n\
             \x20   except socket.timeout: pass\n\
             \x20   open('{p}.tmp','w').write(str(n))\n\
             \x20   import os; os.replace('{p}.tmp','{p}')\n\
             \x20   time.sleep(0.1)\n",
            p = count.display()
        );
        let child = spawn_python(ns, &code, "flow");
        let f = Flow { child, count };
        wait("the flow to pass data", Duration::from_secs(10), || (f.echoed() > 0).then_some(()));
        f
    }

    /// Echoes received so far.
    pub fn echoed(&self) -> u64 {
        std::fs::read_to_string(&self.count).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Whether the flow passes data now: the count grows within `within`.
    pub fn passing(&self, within: Duration) -> bool {
        let n = self.echoed();
        let start = Instant::now();
        while start.elapsed() < within {
            if self.echoed() > n {
                return true;
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP server in `ns` on `port` that answers every connection with `name` (who answers
/// an address: a hijacked address answers with the hijacker's name).
pub struct Banner(PyServer);

impl Banner {
    pub fn start(ns: &str, port: u16, name: &str) -> Banner {
        let code = format!(
            "import socket\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0',{port})); s.listen(64)\n\
             while True:\n\
             \x20   c,_=s.accept(); c.sendall(b'{name}'); c.close()\n"
        );
        Banner(PyServer::start(ns, port, &code, "the banner server"))
    }
}

/// An HTTP server in `ns` on `port` answering every GET with the source address it saw.
pub struct SourceEcho(PyServer);

impl SourceEcho {
    pub fn start(ns: &str, port: u16) -> SourceEcho {
        let code = format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       b=self.client_address[0].encode()\n\
             \x20       self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers()\n\
             \x20       self.wfile.write(b)\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.ThreadingHTTPServer(('0.0.0.0',{port}),H).serve_forever()\n"
        );
        SourceEcho(PyServer::start(ns, port, &code, "the source echo"))
    }
}

/// A TCP sink in `ns` on `port`: reads every connection to its end and closes it.
pub struct Sink(PyServer);

impl Sink {
    pub fn start(ns: &str, port: u16) -> Sink {
        let code = format!(
            "import socket,threading\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0',{port})); s.listen(64)\n\
             def h(c):\n\
             \x20   while c.recv(65536): pass\n\
             \x20   c.close()\n\
             while True:\n\
             \x20   c,_=s.accept(); threading.Thread(target=h,args=(c,),daemon=True).start()\n"
        );
        Sink(PyServer::start(ns, port, &code, "the sink"))
    }
}

/// Sends exactly `bytes` bytes from `ns` to a [`Sink`] at `ip:port` over one TCP
/// connection and waits for the sink to close it (all read). True when it went through.
pub fn send_bytes(ns: &str, ip: &str, port: u16, bytes: usize) -> bool {
    let code = format!(
        "import socket\n\
         s=socket.create_connection(('{ip}',{port}),timeout=10)\n\
         s.sendall(b'x'*{bytes}); s.shutdown(socket.SHUT_WR)\n\
         while s.recv(65536): pass\n"
    );
    in_ns(ns, &["python3", "-c", &code]).status.success()
}

/// GET `http://ip:port/` from `ns` (2 s): the body, or None when no answer came.
pub fn http_get(ns: &str, ip: &str, port: u16) -> Option<String> {
    let code = format!(
        "import urllib.request,sys\n\
         sys.stdout.write(urllib.request.urlopen('http://{ip}:{port}/',timeout=2).read().decode())\n"
    );
    let out = in_ns(ns, &["python3", "-c", &code]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Who answers `ip:port` from `ns` (a [`Banner`]'s name), or None when nothing does.
pub fn who(ns: &str, ip: &str, port: u16) -> Option<String> {
    let code = format!(
        "import socket,sys\n\
         s=socket.create_connection(('{ip}',{port}),timeout=1.5)\n\
         s.settimeout(1.5)\n\
         sys.stdout.write(s.recv(64).decode())\n"
    );
    let out = in_ns(ns, &["python3", "-c", &code]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The kernel state of namespace `ns` as read back (`ip -j -d link`, the permanent and
/// static entries of `bridge -j fdb`, `nft -j list ruleset`), normalised: handles, ifindexes,
/// timers and counters dropped, links and FDB entries sorted. Two equal read-backs are the
/// same data path.
pub fn readback(ns: &str) -> serde_json::Value {
    use serde_json::Value;
    fn json(out: Output) -> Value {
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| {
                    !(k == "handle"
                        || k == "ifindex"
                        || k == "link_index"
                        || k == "link_netnsid"
                        || k == "packets"
                        || k == "bytes"
                        || k == "version"
                        || k == "release_name"
                        || k == "json_schema_version"
                        || k.contains("timer"))
                });
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut links = json(run(&["ip", "-n", ns, "-j", "-d", "link"]));
    let mut fdb = json(run(&["bridge", "-n", ns, "-j", "fdb", "show"]));
    let mut nft = json(run(&["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"]));
    for v in [&mut links, &mut fdb, &mut nft] {
        strip(v);
    }
    if let Value::Array(a) = &mut links {
        a.sort_by_key(|l| l["ifname"].as_str().unwrap_or("").to_string());
    }
    if let Value::Array(a) = &mut fdb {
        a.retain(|e| matches!(e["state"].as_str(), Some("permanent" | "static")));
        a.sort_by_key(|e| e.to_string());
    }
    // Tables in a stable order (a table made again lists after the others); each table's
    // objects keep theirs (a chain's rules are in order).
    if let Some(a) = nft["nftables"].as_array_mut() {
        a.sort_by_key(|item| {
            let (kind, v) =
                item.as_object().and_then(|o| o.iter().next()).map(|(k, v)| (k.clone(), v.clone())).unwrap_or_default();
            let table = if kind == "table" { v["name"].clone() } else { v["table"].clone() };
            (v["family"].as_str().unwrap_or("").to_string(), table.as_str().unwrap_or("").to_string())
        });
    }
    serde_json::json!({ "links": links, "fdb": fdb, "nft": nft })
}
