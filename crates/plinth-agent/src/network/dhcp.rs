//! DHCP and DNS per subnet: one dnsmasq per subnet bridge inside the VPC namespace,
//! static entries only (`--dhcp-range=<net>,static,<mask>`), a hosts directory with one
//! file per NIC (`mac,ip[,hostname]`), option 26 (MTU) and option 3 (gateway). With the
//! VPC's DNS domain (`<vpc>.internal`) it also answers DNS on the gateway address: a names
//! directory with one file per NIC of the VPC that has a name (`ip name.<domain> name`,
//! every subnet's server knows the whole VPC), the domain and search list handed out by
//! DHCP (options 15 and 119), nothing forwarded (no upstream: names outside the domain are
//! not resolved), and a TTL of 0 so a rename or delete is seen at the next lookup.
//!
//! dnsmasq runs detached (it outlives the agent) and is found again through its pid file,
//! checked against `/proc/<pid>/cmdline`. Its files live under
//! `<state>/network/<namespace>/`: `br<i>.pid`, `br<i>.leases`, `br<i>.args` (the options
//! it was started with: a change restarts it) and `br<i>.hosts/<nic id>`. dnsmasq 2.90
//! reads new files in the hosts directory by inotify, but keeps entries of changed or
//! deleted files until SIGHUP, so the agent sends SIGHUP whenever a file changed or went.
//! A change apply trusts the hosts directories as the agent last wrote them ([`Hosts`]) and
//! writes only the entries that differ; a verifying one reads them back (at 1,000 NICs,
//! reading every file on each change was a seventh of the agent's CPU).

use super::plan::{SubnetPlan, VpcPlan};
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files of one subnet's dnsmasq.
pub struct Files {
    /// dnsmasq's pid file.
    pub pid: PathBuf,
    /// Its lease file.
    pub leases: PathBuf,
    /// The options it was started with.
    pub args: PathBuf,
    /// Its hosts directory (one file per NIC).
    pub hosts: PathBuf,
    /// Its names directory (one file per named NIC of the VPC).
    pub names: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// One directory's files as written: file name → content.
pub type Dir = BTreeMap<String, String>;

/// Per subnet bridge: its hosts directory as the agent last wrote or read it; its names
/// directory under `<bridge>.names`.
pub type Hosts = BTreeMap<String, Dir>;

/// The files of `bridge` under the VPC's state directory.
pub fn files(vpc_dir: &Path, bridge: &str) -> Files {
    Files {
        pid: vpc_dir.join(format!("{bridge}.pid")),
        leases: vpc_dir.join(format!("{bridge}.leases")),
        args: vpc_dir.join(format!("{bridge}.args")),
        hosts: vpc_dir.join(format!("{bridge}.hosts")),
        names: vpc_dir.join(format!("{bridge}.names")),
        log: vpc_dir.join(format!("{bridge}.log")),
    }
}

/// The pid of the dnsmasq whose pid file is `pid_file`, when it is alive and is ours.
pub fn running(pid_file: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    (cmdline.contains("dnsmasq") && cmdline.contains(&*pid_file.to_string_lossy())).then_some(pid)
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: sending a signal to a pid we checked is our dnsmasq.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Stops the dnsmasq of `pid_file` (if ours and alive) and waits briefly for it to go.
pub fn stop(pid_file: &Path) {
    if let Some(pid) = running(pid_file) {
        signal(pid, libc::SIGTERM);
        for _ in 0..100 {
            if running(pid_file).is_none() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(pid) = running(pid_file) {
            signal(pid, libc::SIGKILL);
        }
    }
    let _ = fs::remove_file(pid_file);
}

fn args(s: &SubnetPlan, f: &Files, domain: Option<&str>) -> Vec<String> {
    let mask = Ipv4Addr::from(if s.prefix == 0 { 0 } else { u32::MAX << (32 - s.prefix) });
    let dns = match domain {
        None => vec!["--port=0".to_owned()],
        Some(d) => vec![
            format!("--domain={d}"),
            format!("--local=/{d}/"),
            "--domain-needed".into(),
            "--bogus-priv".into(),
            format!("--hostsdir={}", f.names.display()),
            format!("--dhcp-option=option:domain-search,{d}"),
        ],
    };
    let mut out = vec!["--conf-file=/dev/null".to_owned()];
    out.extend(dns);
    out.extend([
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--bind-interfaces".into(),
        format!("--interface={}", s.bridge),
        "--except-interface=lo".into(),
        format!("--pid-file={}", f.pid.display()),
        format!("--dhcp-leasefile={}", f.leases.display()),
        format!("--dhcp-hostsdir={}", f.hosts.display()),
        format!("--dhcp-range={},static,{mask},12h", s.network),
        format!("--dhcp-option=option:router,{}", s.gateway),
        format!("--dhcp-option-force=option:mtu,{}", s.mtu),
        "--dhcp-authoritative".into(),
        format!("--log-facility={}", f.log.display()),
    ]);
    out
}

/// The VPC's DNS domain, when it is a usable one.
fn domain(plan: &VpcPlan) -> Option<&str> {
    let d = plan.spec.dns_domain.as_deref()?;
    d.split('.').all(|l| clean_hostname(Some(l)).is_some()).then_some(d)
}

/// Every named NIC of the VPC (local and remote): file name → `ip fqdn name` line.
fn names(plan: &VpcPlan, domain: &str) -> BTreeMap<String, String> {
    let local = plan.nics.iter().map(|n| (&n.spec.nic_id, &n.spec.ipv4, n.spec.dns_name.as_deref()));
    let remote = plan.spec.remote_nics.iter().map(|n| (&n.nic_id, &n.ipv4, n.dns_name.as_deref()));
    local
        .chain(remote)
        .filter_map(|(id, ip, name)| {
            let name = clean_hostname(name)?;
            Some((id.to_string(), format!("{ip} {name}.{domain} {name}\n")))
        })
        .collect()
}

/// Makes directory `dir` hold exactly `want` (starting from `have`, read when `None`):
/// answers whether a file changed or went (dnsmasq needs SIGHUP for those; new files it
/// reads by inotify).
fn sync_dir(
    dir: &Path,
    have: Option<BTreeMap<String, String>>,
    want: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", dir.display());
    let have = match have {
        Some(h) => h,
        None => {
            fs::create_dir_all(dir).map_err(|e| io("directory", e))?;
            read_hosts(dir).map_err(|e| io("directory", e))?
        }
    };
    let mut changed = false;
    for name in have.keys().filter(|n| !want.contains_key(*n)) {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("file in", e)),
            _ => changed = true,
        }
    }
    for (name, line) in want {
        let cur = have.get(name);
        if cur != Some(line) {
            if cur.is_some() {
                changed = true;
            }
            let tmp = dir.join(format!(".{name}.tmp"));
            fs::write(&tmp, line).map_err(|e| io("file in", e))?;
            fs::rename(&tmp, dir.join(name)).map_err(|e| io("file in", e))?;
        }
    }
    Ok(changed)
}

/// A hostname dnsmasq accepts (a DNS label), or nothing.
fn clean_hostname(name: Option<&str>) -> Option<&str> {
    let n = name?;
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-');
    ok.then_some(n)
}

/// Converges every DHCP subnet's hosts directory and dnsmasq, starting from `known` (a
/// bridge missing there is read from disk); answers errors per bridge and the hosts
/// directories as they are now (a bridge whose converge failed is left out: read again
/// next time).
pub fn converge(plan: &VpcPlan, vpc_dir: &Path, mut known: Hosts) -> (BTreeMap<String, String>, Hosts) {
    let mut errors = BTreeMap::new();
    let mut now = Hosts::new();
    for s in &plan.subnets {
        let f = files(vpc_dir, &s.bridge);
        if !s.dhcp {
            stop(&f.pid);
            let _ = fs::remove_dir_all(&f.hosts);
            continue;
        }
        let names_key = format!("{}.names", s.bridge);
        match converge_one(plan, s, &f, known.remove(&s.bridge), known.remove(&names_key)) {
            Ok((hosts, names)) => {
                now.insert(s.bridge.clone(), hosts);
                now.insert(names_key, names);
            }
            Err(e) => {
                errors.insert(s.bridge.clone(), e);
            }
        }
    }
    // Subnets no longer in the spec.
    if let Ok(dir) = fs::read_dir(vpc_dir) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(bridge) = name.strip_suffix(".pid") else { continue };
            if !plan.subnets.iter().any(|s| s.bridge == bridge) {
                let f = files(vpc_dir, bridge);
                stop(&f.pid);
                let _ = fs::remove_dir_all(&f.hosts);
                let _ = fs::remove_dir_all(&f.names);
                for p in [&f.leases, &f.args, &f.log] {
                    let _ = fs::remove_file(p);
                }
            }
        }
    }
    (errors, now)
}

/// What the DHCP directories and dnsmasq's options of `plan` are made from, hashed (the
/// subnets, the domain, each local NIC's MAC, address and names, each remote NIC's
/// address and name): a change apply whose plan hashes as the last one's has nothing to
/// write here (at 1,100 NICs, building and comparing the directories cost 3–10 ms of
/// every change).
pub fn inputs(plan: &VpcPlan) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    plan.spec.dns_domain.hash(&mut h);
    for s in &plan.subnets {
        (&s.subnet_id, &s.bridge, s.dhcp, &s.gateway, s.network, s.prefix, s.mtu).hash(&mut h);
    }
    for n in &plan.nics {
        let n = &n.spec;
        (&n.nic_id, &n.subnet_id, &n.mac, &n.ipv4, &n.hostname, &n.dns_name).hash(&mut h);
    }
    for r in &plan.spec.remote_nics {
        (&r.nic_id, &r.ipv4, &r.dns_name).hash(&mut h);
    }
    h.finish()
}

/// The hosts and names directories of the plan's DHCP subnets as they are on disk, keyed
/// as [`converge`] answers them (a directory that cannot be read is left out).
pub fn read(plan: &VpcPlan, vpc_dir: &Path) -> Hosts {
    let mut out = Hosts::new();
    for s in plan.subnets.iter().filter(|s| s.dhcp) {
        let f = files(vpc_dir, &s.bridge);
        for (key, dir) in [(s.bridge.clone(), &f.hosts), (format!("{}.names", s.bridge), &f.names)] {
            if let Ok(d) = read_hosts(dir) {
                out.insert(key, d);
            }
        }
    }
    out
}

/// The hosts directory's files and their contents.
fn read_hosts(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)?.flatten() {
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        out.insert(e.file_name().to_string_lossy().into_owned(), text);
    }
    Ok(out)
}

/// One subnet: its hosts and names directories (from `have`, or read when `None`) and its
/// dnsmasq; answers the directories as written.
fn converge_one(
    plan: &VpcPlan,
    s: &SubnetPlan,
    f: &Files,
    have: Option<BTreeMap<String, String>>,
    have_names: Option<BTreeMap<String, String>>,
) -> Result<(Dir, Dir), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let mut want = BTreeMap::new();
    for n in plan.nics.iter().filter(|n| n.spec.subnet_id == s.subnet_id) {
        let mut line = format!("{},{}", n.spec.mac.to_ascii_lowercase(), n.spec.ipv4);
        if let Some(h) = clean_hostname(n.spec.hostname.as_deref()) {
            line.push(',');
            line.push_str(h);
        }
        line.push('\n');
        want.insert(n.spec.nic_id.to_string(), line);
    }
    let mut changed = sync_dir(&f.hosts, have, &want)?;
    let domain = domain(plan);
    let want_names = domain.map(|d| names(plan, d)).unwrap_or_default();
    changed |= sync_dir(&f.names, have_names, &want_names)?;
    let args = args(s, f, domain);
    let args_text = args.join("\n");
    let same_args = fs::read_to_string(&f.args).ok().as_deref() == Some(args_text.as_str());
    match running(&f.pid) {
        Some(pid) if same_args => {
            if changed {
                signal(pid, libc::SIGHUP);
            }
            Ok((want, want_names))
        }
        _ => {
            stop(&f.pid);
            fs::write(&f.args, &args_text).map_err(|e| io("args file", e))?;
            let mut all = vec!["netns".to_owned(), "exec".to_owned(), plan.ns.clone(), "dnsmasq".to_owned()];
            all.extend(args);
            // dnsmasq daemonises: the `ip` process ends once it is up; its output goes to
            // /dev/null (the daemon keeps no pipe of ours open), errors to its log file.
            let status = Command::new("ip")
                .args(&all)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| io("dnsmasq", e))?;
            if !status.success() {
                let log = fs::read_to_string(&f.log).unwrap_or_default();
                let last = log.lines().last().unwrap_or("").to_owned();
                return Err(format!("dnsmasq on {} did not start ({status}): {last}", s.bridge));
            }
            Ok((want, want_names))
        }
    }
}

/// Whether the NIC's entry is in its subnet's hosts directory as `hosts` (the converge's
/// answer) knows it (whether its subnet's dnsmasq is alive is [`running`], asked once per
/// subnet).
pub fn observe(vpc_dir: &Path, hosts: &Hosts, bridge: &str, nic: &str) -> Result<(), String> {
    let f = files(vpc_dir, bridge);
    if !hosts.get(bridge).is_some_and(|h| h.contains_key(nic)) {
        return Err(format!("no DHCP host entry for it in {}", f.hosts.display()));
    }
    Ok(())
}
