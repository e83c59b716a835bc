//! The host's tenant data path: the [`HostNetwork`] trait (converge the kernel to the
//! server's whole desired network of this host, report per-NIC readiness from what reads
//! back), its Linux-bridge backend, [`LinuxBridge`], and its Open vSwitch backend,
//! [`ovs::OpenVswitch`] (which shares the VPC namespace's parts: DHCP, router, counters).
//!
//! Per VPC on this host: a namespace `{prefix}{vni}` (forwarding on; it routes between the
//! VPC's subnets), a bridge per subnet holding the gateway, a VXLAN device per subnet made
//! in the agent's namespace and moved in (static FDB, head-end replication), a port per
//! local NIC (a persistent tap for VMs, a veth pair for namespace guests), nftables
//! filtering, and a dnsmasq per subnet. VPCs not in the spec are torn down whole.
//!
//! Tooling: a change's ports, FDB and neighbour entries go over rtnetlink ([`rtnl`], a
//! socket opened in the VPC namespace: an `ip`/`bridge` process first dumps every link of
//! the namespace, 15–30 ms at 1,000 NICs); reading a namespace back, the segments
//! (bridges, VXLAN devices), `nft` and `conntrack` stay with the tools, run per namespace
//! with `-n` or by `setns` in the child, so their text is exactly what an operator types
//! to inspect or repair a hop. No thread of the agent ever changes namespace except the
//! short-lived ones [`tap`] spawns (TUN ioctl, opening a netlink socket). The diff keeps a
//! re-apply of an unchanged spec to read-backs only.
//!
//! Surveys: a verification's reads (links, FDB, neighbours, the filter's tables, the DHCP
//! directories, the meter's counters) can be taken beforehand by [`HostNetwork::survey`],
//! beside change applies; the verification then uses them where nothing was written
//! since they began (the view as the agent believes it, the sets no change touched) and
//! reads again only what it cannot trust, so a periodic verification does not hold the
//! next change back for its reads.
//!
//! Modules: [`cmd`] (running the tools), [`rtnl`] (rtnetlink messages), [`plan`] (spec →
//! kernel names), [`links`] (namespace, bridges, VXLAN, ports), [`fdb`] (VXLAN FDB and
//! neighbours), [`filter`] (nftables), [`nft_shell`] (the `nft` kept open per namespace
//! for its element updates), [`listing`] (the filter's tables as read, compared with the
//! ruleset), [`guard`] (the fail-closed eBPF program at each port's and VXLAN
//! device's egress), [`dhcp`] (dnsmasq), [`router`] (the uplink to the provider network
//! and its public addresses), [`meter`] (egress byte counters and their epochs), [`tap`]
//! (TUN ioctl, namespace threads), [`neigh_limits`] (the machine-wide ARP table limits
//! the data path outgrows).

pub mod cmd;
pub mod conntrack;
pub mod dhcp;
pub mod fdb;
pub mod filter;
pub mod guard;
pub mod links;
pub mod listing;
pub mod meter;
pub mod neigh_limits;
pub mod nft_shell;
pub mod ovs;
pub mod plan;
pub mod router;
pub mod rtnl;
pub mod tap;
pub mod view;

use crate::runtime::TapOpener;
use plan::VpcPlan;
use plinth_api::{ComponentStatus, HostNetworkSpec, NicComponent, NicId, NicPlug, ObservedNetwork, ObservedNic};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use view::View;

/// A host network backend. Its applies block (they run tools and wait on the kernel):
/// call them from a blocking thread, one at a time.
pub trait HostNetwork: Send + Sync + 'static {
    /// Converges the data path to `spec`, verifying: reads every object back, repairs any
    /// drift, and answers what reads back afterwards (the first apply, the periodic one).
    fn apply(&self, spec: &HostNetworkSpec) -> ObservedNetwork;

    /// Converges the data path to a changed `spec`, trusting that the kernel still holds
    /// what the last apply left: only the difference is sent, nothing is read back, and
    /// the answer comes from what the backend knows (a command that fails makes it fall
    /// back to a verifying apply). Defaults to [`HostNetwork::apply`].
    fn apply_change(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        self.apply(spec)
    }

    /// Reads what the next verifying [`HostNetwork::apply`] of `spec` would read, without
    /// writing anything: it may run beside [`HostNetwork::apply_change`], on another
    /// thread. Answers whether this backend keeps surveys (`false`: its verifications read
    /// for themselves, and nothing was read).
    fn survey(&self, _spec: &HostNetworkSpec) -> bool {
        false
    }

    /// Reads the local NICs' egress byte counters (as of the last apply's NICs). Blocks.
    fn counters(&self) -> Vec<meter::Reading> {
        Vec::new()
    }

    /// How often the counters are shipped (`None`: this backend keeps none).
    fn counter_period(&self) -> Option<std::time::Duration> {
        None
    }

    /// The data path's name, as the host reports it (`linux-bridge`, `openvswitch`).
    fn datapath(&self) -> &'static str {
        "linux-bridge"
    }
}

/// Settings every host network backend takes.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// This host's underlay address: the VXLAN source (VTEP).
    pub underlay_ip: String,
    /// Prefix of VPC namespace names (`pv-`).
    pub netns_prefix: String,
    /// Where dnsmasq's files go (`<dir>/<namespace>/…`); dnsmasq reads them after dropping
    /// root, so the path must be traversable by its user (the agent uses `/run/plinth/network`).
    pub state_dir: PathBuf,
    /// Who this backend is (e.g. the agent's data directory): written into each namespace
    /// it makes (`<dir>/<namespace>/owner`), so that it tears down only its own. Several
    /// agents may share a machine, its /run/netns and a namespace prefix (tests, a second
    /// `plinth up`): none may remove another's VPCs as "not in my spec".
    pub owner: String,
    /// The bridge (in the agent's namespace) that reaches the provider network: each VPC
    /// router's uplink is a port of it. `None`: this host routes no public address.
    pub provider_bridge: Option<String>,
    /// How often the egress counters are read and shipped.
    pub counter_period: std::time::Duration,
}

impl NetworkConfig {
    /// Where one VPC namespace's files live.
    pub fn vpc_dir(&self, ns: &str) -> PathBuf {
        self.state_dir.join(ns)
    }

    /// Whether this backend made namespace `ns` (its owner file names it).
    pub fn owns(&self, ns: &str) -> bool {
        std::fs::read_to_string(self.vpc_dir(ns).join("owner")).is_ok_and(|o| o == self.owner)
    }

    /// Claims namespace `ns` before making it, so that a crash in between cannot leave one
    /// this backend would not recognise as its own.
    pub fn claim(&self, ns: &str) -> Result<(), String> {
        std::fs::create_dir_all(self.vpc_dir(ns))
            .and_then(|()| std::fs::write(self.vpc_dir(ns).join("owner"), &self.owner))
            .map_err(|e| format!("recording the namespace's owner: {e}"))
    }

    /// The namespaces of this backend present on the host (of its prefix, and made by it).
    pub fn present_namespaces(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(&self.netns_prefix)
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_digit())
                    && self.owns(&name)
                {
                    out.push(name);
                }
            }
        }
        out
    }

    /// Removes everything of one VPC namespace: dnsmasq, files, the namespace.
    pub fn teardown(&self, ns: &str) -> Result<(), String> {
        let dir = self.vpc_dir(ns);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid") {
                    dhcp::stop(&e.path());
                }
            }
        }
        links::delete_ns(ns)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

/// The Linux-bridge + VXLAN + nftables backend.
pub struct LinuxBridge {
    cfg: NetworkConfig,
    /// Per namespace: what the backend knows it holds.
    vpcs: Mutex<BTreeMap<String, VpcState>>,
    /// Per namespace: when its filter's sets were written (read by surveys while an apply
    /// holds the namespace's state), and the `nft` kept open for its element updates.
    filters: Mutex<BTreeMap<String, Arc<FilterIo>>>,
    /// Per namespace: the last survey, for the next verification.
    surveys: Mutex<BTreeMap<String, Survey>>,
}

/// One namespace's filter writes: their clock and the `nft` that makes them.
struct FilterIo {
    writes: Mutex<listing::Writes>,
    nft: nft_shell::Nft,
}

/// One VPC namespace as a survey read it.
struct Survey {
    /// When the reads ended.
    at: std::time::Instant,
    /// The filter's write clock when the reads began.
    since: u64,
    view: Result<View, String>,
    listing: Result<listing::Listing, String>,
    /// The DHCP hosts and names directories.
    dhcp: dhcp::Hosts,
    /// The meter table's counters (`None`: not read).
    meter: Option<BTreeMap<String, String>>,
}

/// How long a survey is good for: a verification uses only one this fresh.
const SURVEY_FRESH: std::time::Duration = std::time::Duration::from_secs(20);

/// What the backend knows of one VPC namespace.
#[derive(Clone, Debug, Default)]
struct VpcState {
    /// The ruleset last loaded (for deltas and cutting connections).
    loaded: Option<filter::Loaded>,
    /// Links, FDB and neighbours as of the last apply; `None`: unknown (read back next).
    view: Option<View>,
    /// The DHCP hosts directories as of the last apply (a change apply starts from them; a
    /// verifying one reads them back).
    dhcp: dhcp::Hosts,
    /// What they were made from ([`dhcp::inputs`]), when that apply wrote them cleanly.
    dhcp_inputs: Option<u64>,
    /// The router's uplink as of the last apply; `None`: unknown (read back next).
    router: Option<router::Held>,
    /// The meter table's counters (address → name) as of the last apply; `None`: unknown.
    meter: Option<BTreeMap<String, String>>,
    /// The NICs whose counters are read.
    ports: meter::Ports,
}

/// What one VPC's apply leaves, for the caller to observe and keep.
struct Applied {
    err: Errors,
    view: View,
    loaded: Option<filter::Loaded>,
    dhcp: dhcp::Hosts,
    dhcp_inputs: Option<u64>,
    router: router::Held,
    meter: Option<BTreeMap<String, String>>,
}

/// Per-NIC component results gathered during one VPC's apply.
#[derive(Default)]
struct Errors {
    /// Errors that hit every NIC of the VPC.
    all: Option<String>,
    per_bridge: BTreeMap<String, String>,
    per_device: BTreeMap<String, String>,
    fdb: Vec<String>,
    filter: Option<String>,
    dhcp: BTreeMap<String, String>,
    router: Option<String>,
    rejected: BTreeMap<NicId, String>,
}

impl Errors {
    /// Whether any command failed (rejected NICs are the spec's problem, not the kernel's).
    fn failed(&self) -> bool {
        self.all.is_some()
            || !self.per_bridge.is_empty()
            || !self.per_device.is_empty()
            || !self.fdb.is_empty()
            || self.filter.is_some()
            || !self.dhcp.is_empty()
            || self.router.is_some()
    }
}

/// One NIC's report: its components in [`NicComponent::ALL`]'s order (tap, bridge port,
/// FDB, filter, DHCP, NAT) and the filter generation it carries.
fn observed(nic_id: &NicId, parts: [Result<(), String>; 6], filter_generation: Option<i64>) -> ObservedNic {
    ObservedNic {
        nic_id: nic_id.clone(),
        components: NicComponent::ALL.into_iter().zip(parts).map(|(c, r)| status(c, r)).collect(),
        filter_generation,
    }
}

/// A NIC that could not be applied at all: every component carries `why`.
fn failed(nic_id: &NicId, why: &str) -> ObservedNic {
    ObservedNic {
        nic_id: nic_id.clone(),
        components: NicComponent::ALL.iter().map(|c| status(*c, Err(why.to_owned()))).collect(),
        filter_generation: None,
    }
}

fn status(component: NicComponent, r: Result<(), String>) -> ComponentStatus {
    match r {
        Ok(()) => ComponentStatus { component, applied: true, detail: None },
        Err(e) => ComponentStatus { component, applied: false, detail: Some(e) },
    }
}

impl Applied {
    /// An apply that stopped before touching the links: nothing but the error to observe.
    fn failed(err: Errors, view: View, loaded: Option<filter::Loaded>) -> Applied {
        Applied {
            err,
            view,
            loaded,
            dhcp: dhcp::Hosts::new(),
            dhcp_inputs: None,
            router: router::Held::default(),
            meter: None,
        }
    }
}

impl LinuxBridge {
    /// A backend with these settings.
    pub fn new(cfg: NetworkConfig) -> LinuxBridge {
        LinuxBridge { cfg, vpcs: Mutex::new(BTreeMap::new()), filters: Mutex::default(), surveys: Mutex::default() }
    }

    /// Keeps at most [`nft_shell::KEEP_AT_MOST`] `nft` open (one more, for `ns`, may
    /// start now: called only when `ns` has none).
    fn trim_kept_nft(&self, ns: &str) {
        let all: Vec<Arc<FilterIo>> = {
            let filters = self.filters.lock().unwrap_or_else(|p| p.into_inner());
            filters.iter().filter(|(n, _)| n.as_str() != ns).map(|(_, io)| io.clone()).collect()
        };
        nft_shell::trim(all.iter().map(|io| &io.nft), nft_shell::KEEP_AT_MOST - 1);
    }

    fn filter_io(&self, ns: &str) -> Arc<FilterIo> {
        let mut all = self.filters.lock().unwrap_or_else(|p| p.into_inner());
        all.entry(ns.to_owned())
            .or_insert_with(|| Arc::new(FilterIo { writes: Mutex::default(), nft: nft_shell::Nft::kept() }))
            .clone()
    }

    fn surveys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Survey>> {
        self.surveys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every VPC namespace of `spec` present here (see [`HostNetwork::survey`]), on
    /// a thread of the lowest priority (its tools inherit it): a survey is background
    /// work, and the changes it runs beside come first.
    fn survey_all(&self, spec: &HostNetworkSpec) {
        std::thread::scope(|sc| {
            sc.spawn(|| {
                // SAFETY: plain syscalls on this thread's own id.
                if unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) } != 0 {
                    tracing::debug!(error = %std::io::Error::last_os_error(), "lowering the survey's priority");
                }
                for vpc in &spec.vpcs {
                    let ns = self.ns_name(vpc.vni);
                    let Ok(plan) = VpcPlan::new(&self.cfg.netns_prefix, &self.cfg.underlay_ip, vpc) else { continue };
                    if links::ns_exists(&ns) {
                        let survey = self.survey_vpc(&plan);
                        self.surveys().insert(ns, survey);
                    }
                }
            });
        });
    }

    /// Reads what a verification of `plan` reads (see [`HostNetwork::survey`]).
    fn survey_vpc(&self, plan: &VpcPlan) -> Survey {
        let ns = plan.ns.as_str();
        let started = std::time::Instant::now();
        let since = self.filter_io(ns).writes.lock().unwrap_or_else(|p| p.into_inner()).now();
        let view = View::read(ns);
        let viewed = started.elapsed();
        let listing = listing::read(ns, listing::FAMILIES.into_iter(), true);
        let listed = started.elapsed();
        let dhcp = dhcp::read(plan, &self.vpc_dir(ns));
        let meter = meter::read(ns);
        tracing::debug!(
            namespace = ns,
            view_ms = viewed.as_millis() as u64,
            filter_ms = (listed - viewed).as_millis() as u64,
            dhcp_meter_ms = (started.elapsed() - listed).as_millis() as u64,
            "VPC surveyed"
        );
        Survey { at: std::time::Instant::now(), since, view, listing, dhcp, meter }
    }

    /// The namespace name of a VNI.
    pub fn ns_name(&self, vni: u32) -> String {
        format!("{}{vni}", self.cfg.netns_prefix)
    }

    fn vpc_dir(&self, ns: &str) -> PathBuf {
        self.cfg.state_dir.join(ns)
    }

    fn vpcs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VpcState>> {
        self.vpcs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The namespaces of this backend present on the host (of its prefix, and made by it).
    pub fn present_namespaces(&self) -> Vec<String> {
        self.cfg.present_namespaces()
    }

    /// Removes everything of one VPC namespace: dnsmasq, files, the namespace.
    fn teardown(&self, ns: &str) -> Result<(), String> {
        // The kept `nft` holds the namespace: it ends first.
        if let Some(io) = self.filters.lock().unwrap_or_else(|p| p.into_inner()).remove(ns) {
            io.nft.close();
        }
        self.cfg.teardown(ns)?;
        self.vpcs().remove(ns);
        Ok(())
    }

    /// Converges one VPC. `verify`: reads the namespace back first, and again after any
    /// change (the answer is then what the kernel holds); otherwise starts from what the
    /// last apply left and reads nothing, falling back to a verifying apply when a command
    /// fails. Takes the VPC's state out of `vpcs` (no copy on the hot path): answers the
    /// errors met, the view to observe, the ruleset loaded and the DHCP hosts directories,
    /// for the caller to put back.
    /// `survey`: the namespace as read beside the changes since (a verification uses what
    /// nothing wrote since, and reads the rest itself).
    fn apply_vpc(&self, plan: &VpcPlan, verify: bool, mut survey: Option<Survey>) -> Applied {
        let mut err = Errors::default();
        let ns = plan.ns.as_str();
        let underlay = self.cfg.underlay_ip.as_str();
        for (n, why) in &plan.rejected {
            err.rejected.insert(n.nic_id.clone(), why.clone());
        }
        let VpcState {
            loaded: prior_loaded,
            view: prior_view,
            dhcp: prior_dhcp,
            dhcp_inputs: prior_dhcp_inputs,
            router: prior_router,
            meter: prior_meter,
            ports: _,
        } = self.vpcs().remove(ns).unwrap_or_default();
        let started = std::time::Instant::now();
        // A verification takes the view a survey read when it agrees with the one carried
        // (what the agent believes the kernel holds).
        let carried = match (verify, prior_view, survey.as_mut().map(|s| &mut s.view)) {
            (false, prior, _) => prior,
            (true, Some(prior), Some(Ok(read))) => match read.agrees_with(&prior) {
                Ok(()) => Some(std::mem::take(read)),
                Err(d) => {
                    tracing::debug!(namespace = ns, difference = %d, "the survey's view is not the one carried: reading the namespace");
                    None
                }
            },
            _ => None,
        };
        let verify = verify || carried.is_none();
        // The DHCP directories and the meter's counters likewise: the survey's read when it
        // agrees with what the last apply left, else read now.
        let known_dhcp = if !verify || survey.as_ref().is_some_and(|s| s.dhcp == prior_dhcp) {
            prior_dhcp
        } else {
            dhcp::Hosts::new()
        };
        let known_meter = match (verify, prior_meter) {
            (false, m) => m,
            (true, Some(m)) if survey.as_ref().is_some_and(|s| s.meter.as_ref() == Some(&m)) => Some(m),
            _ => None,
        };
        let mut view = match carried {
            Some(v) if !verify => v,
            carried => {
                if let Err(e) = self.cfg.claim(ns) {
                    err.all = Some(e);
                    return Applied::failed(err, View::default(), prior_loaded);
                }
                match links::ensure_ns(ns).and_then(|()| carried.map_or_else(|| View::read(ns), Ok)) {
                    Ok(v) => v,
                    Err(e) => {
                        err.all = Some(e);
                        return Applied::failed(err, View::default(), prior_loaded);
                    }
                }
            }
        };
        let read_at = started.elapsed();
        // What a verification read, to tell whether anything changed since.
        let initial = verify.then(|| view.clone());
        let (per_bridge, segments_changed) = links::converge_segments(plan, underlay, &view.links);
        err.per_bridge = per_bridge;
        if segments_changed && let Err(e) = view.reread_links(ns) {
            err.all = Some(e);
        }
        let mut nl = match rtnl::Rtnl::open(ns) {
            Ok(nl) => nl,
            Err(e) => {
                err.all = Some(e);
                return Applied::failed(err, view, prior_loaded);
            }
        };
        err.fdb = fdb::converge(Some(ns), plan, underlay, &mut nl, &mut view.fdb)
            .into_iter()
            .map(|(d, e)| format!("{d}: {e}"))
            .collect();
        err.fdb.extend(fdb::converge_neigh(plan, underlay, &mut nl, &mut view.neigh));
        let links_at = started.elapsed();

        // The ports are made (detached and down) and guarded on a second thread while this
        // one renders and loads the filter: making a port and attaching its guard mostly
        // wait on the kernel (the guard's attach waits out an RCU grace period, 10–30 ms on
        // a busy host), rendering and `nft` are CPU. A port carries nothing until it joins
        // its bridge, which it does below, only once the rules holding it are loaded and
        // its guard is on (a guard missing is drift repaired here).
        let io = self.filter_io(ns);
        if !io.nft.is_open() {
            self.trim_kept_nft(ns);
        }
        let check = match (verify, survey.as_ref().map(|s| (&s.listing, s.since))) {
            (false, _) => filter::Check::Trust,
            (true, Some((Ok(listing), since))) => filter::Check::Surveyed { listing, since },
            (true, _) => filter::Check::Read,
        };
        let ((made_errors, made_ms, guarded_ms), (loaded, filter_err), rendered_at, filter_at) =
            std::thread::scope(|sc| {
                let (links, nl) = (&mut view.links, &mut nl);
                let maker = sc.spawn(move || {
                    let t = std::time::Instant::now();
                    let mut errors = links::converge_ports(plan, nl, links);
                    let made = t.elapsed();
                    errors.extend(guard::converge(ns, plan, links));
                    (errors, made, t.elapsed())
                });
                let new = filter::render(plan, prior_loaded.as_ref().map(|l| &l.ruleset));
                let rendered_at = started.elapsed();
                let filtered = match filter::apply(ns, prior_loaded.as_ref(), new, check, &io.writes, &io.nft) {
                    Ok(loaded) => {
                        if let Some(old) = &prior_loaded {
                            let t = std::time::Instant::now();
                            filter::cut_connections(ns, &old.ruleset, &loaded.ruleset);
                            tracing::debug!(namespace = ns, cut_ms = t.elapsed().as_millis() as u64, "connections cut");
                        }
                        (Some(loaded), None)
                    }
                    Err(e) => (prior_loaded, Some(e)),
                };
                let filter_at = started.elapsed();
                let made = maker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                (made, filtered, rendered_at, filter_at)
            });
        err.per_device = made_errors;
        err.filter = filter_err;
        let no_rules = BTreeMap::new();
        let loaded_gens = loaded.as_ref().map_or(&no_rules, |l| &l.ruleset.generations);
        // A port joins its bridge only once rules holding it are loaded.
        let joining: Vec<&plan::NicPlan> = plan
            .nics
            .iter()
            .filter(|n| {
                let dev = &n.spec.device;
                !err.per_device.contains_key(dev)
                    && view.links.contains_key(dev)
                    && loaded_gens.contains_key(&n.spec.nic_id)
            })
            .collect();
        err.per_device.extend(links::attach_ports(&mut nl, &joining, &mut view.links));
        let ports_at = started.elapsed();
        // The ports carry traffic now; spare taps for the next NICs are made after them.
        for e in links::replenish_spares(plan, &mut view.links) {
            tracing::warn!(namespace = ns, error = %e, "spare tap");
        }
        let spares_at = started.elapsed();
        // The router's public addresses go up once the ports carry traffic and the rules
        // translating for them are loaded.
        let (router_held, routed) = router::converge(
            ns,
            plan.spec.vni,
            self.cfg.provider_bridge.as_deref(),
            &router::desired(plan),
            if verify { None } else { prior_router.as_ref() },
        );
        err.router = routed.err();
        let (meter_held, metered) = meter::converge(ns, &meter::desired(plan), known_meter.as_ref());
        if let Err(e) = metered {
            tracing::warn!(namespace = ns, error = %e, "egress counters");
        }
        let routed_at = started.elapsed();
        let vpc_dir = self.vpc_dir(ns);
        let mut hosts = dhcp::Hosts::new();
        let dhcp_inputs = dhcp::inputs(plan);
        if !verify && prior_dhcp_inputs == Some(dhcp_inputs) {
            // Made from the same inputs as the last apply's: nothing to write.
            hosts = known_dhcp;
        } else if let Err(e) = std::fs::create_dir_all(&vpc_dir) {
            for s in &plan.subnets {
                err.dhcp.insert(s.bridge.clone(), format!("state dir {}: {e}", vpc_dir.display()));
            }
        } else {
            (err.dhcp, hosts) = dhcp::converge(plan, &vpc_dir, known_dhcp);
        }
        let dhcp_inputs = err.dhcp.is_empty().then_some(dhcp_inputs);
        let failed = err.failed();
        if !verify && failed {
            tracing::info!(namespace = ns, "a change did not apply cleanly; verifying the namespace");
            self.vpcs().insert(ns.to_owned(), VpcState { loaded, view: None, dhcp: hosts, ..Default::default() });
            return self.apply_vpc(plan, true, None);
        }
        if initial.is_some_and(|i| failed || view != i) {
            match View::read(ns) {
                Ok(v) => view = v,
                Err(e) => err.all = Some(e),
            }
        }
        tracing::debug!(
            namespace = ns,
            verify,
            nics = plan.nics.len(),
            surveyed = survey.is_some(),
            read_ms = read_at.as_millis() as u64,
            links_ms = (links_at - read_at).as_millis() as u64,
            render_ms = (rendered_at - links_at).as_millis() as u64,
            filter_ms = (filter_at - rendered_at).as_millis() as u64,
            attach_ms = (ports_at - filter_at).as_millis() as u64,
            spares_ms = (spares_at - ports_at).as_millis() as u64,
            router_meter_ms = (routed_at - spares_at).as_millis() as u64,
            dhcp_ms = (started.elapsed() - routed_at).as_millis() as u64,
            made_ms = made_ms.as_millis() as u64,
            guard_ms = (guarded_ms - made_ms).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "VPC applied"
        );
        Applied { err, view, loaded, dhcp: hosts, dhcp_inputs, router: router_held, meter: Some(meter_held) }
    }

    /// Answers each NIC's components from `view` (read back, or kept current by the
    /// commands of a change), the errors met, and the ruleset loaded.
    fn observe_vpc(&self, plan: &VpcPlan, a: &Applied) -> Vec<ObservedNic> {
        let (err, view, loaded, hosts) = (&a.err, &a.view, a.loaded.as_ref(), &a.dhcp);
        let ns = plan.ns.as_str();
        let underlay = self.cfg.underlay_ip.as_str();
        let empty = view::FdbSet::new();
        let mut fdb_missing: BTreeMap<String, String> = BTreeMap::new();
        for (vx, want) in &fdb::desired(plan, underlay) {
            if !view.links.contains_key(vx) {
                fdb_missing.insert(vx.clone(), format!("no VXLAN device {vx} in {ns}"));
            } else if let Some(m) = want.difference(view.fdb.get(vx).unwrap_or(&empty)).next() {
                fdb_missing.insert(vx.clone(), format!("{vx} lacks the entry {} → {}", m.0, m.1));
            }
        }
        let neigh_missing = fdb::desired_neigh(plan, underlay)
            .difference(&view.neigh)
            .next()
            .map(|(a, d, _)| format!("no neighbour entry for {a} on {d}"));
        let vpc_dir = self.vpc_dir(ns);
        let dhcp_up: BTreeMap<&str, bool> = plan
            .subnets
            .iter()
            .map(|s| (s.bridge.as_str(), dhcp::running(&dhcp::files(&vpc_dir, &s.bridge).pid).is_some()))
            .collect();
        let mut out = Vec::new();
        for (n, why) in &plan.rejected {
            out.push(failed(&n.nic_id, why));
        }
        for n in &plan.nics {
            let dev = n.spec.device.as_str();
            let sub = plan.subnet(&n.spec.subnet_id);
            let link = view.links.get(dev);
            let fail = |fallback: String| err.all.clone().unwrap_or(fallback);
            let tap = match (link, n.spec.plug) {
                (Some(l), NicPlug::Tap) if l.kind == "tun" => Ok(()),
                (Some(l), NicPlug::Veth) if l.kind == "veth" => Ok(()),
                _ => Err(fail(err.per_device.get(dev).cloned().unwrap_or_else(|| format!("no port {dev} in {ns}")))),
            };
            let port = match link {
                Some(l) if l.master.as_deref() == Some(n.bridge.as_str()) && l.up => Ok(()),
                _ => Err(fail(
                    err.per_device
                        .get(dev)
                        .or_else(|| err.per_bridge.get(&n.bridge))
                        .or(err.filter.as_ref())
                        .cloned()
                        .unwrap_or_else(|| format!("{dev} is not an up port of {}", n.bridge)),
                )),
            };
            let fdb = match sub {
                _ if err.all.is_some() => Err(fail(String::new())),
                Some(s) => match &s.vxlan {
                    Some((vx, _)) => match fdb_missing.get(vx).or(neigh_missing.as_ref()) {
                        None => Ok(()),
                        Some(e) => Err(err.fdb.first().cloned().unwrap_or_else(|| e.clone())),
                    },
                    None if plan.spec.remote_nics.iter().any(|r| r.subnet_id == s.subnet_id) => {
                        Err(format!("subnet {} has no VNI: it cannot span hosts", s.index))
                    }
                    None => Ok(()),
                },
                None => Err("unknown subnet".to_owned()),
            };
            let filter_gen = loaded.and_then(|l| l.ruleset.generations.get(&n.spec.nic_id).copied());
            // Fail closed: after a refused batch the old ruleset stays; a NIC whose rules
            // did not change is still applied, the others carry the batch's error.
            let vx = sub.and_then(|s| s.vxlan.as_ref()).map(|(vx, _)| vx.as_str());
            let filt = match (filter_gen, &err.filter) {
                (Some(g), _) if g == n.spec.filter_generation && err.all.is_none() => {
                    guard::observe(&view.links, &err.per_device, std::iter::once(dev).chain(vx))
                }
                (_, Some(e)) => Err(e.clone()),
                _ => Err(fail("its rules are not loaded".to_owned())),
            };
            let dhcp = match sub {
                Some(s) if !s.dhcp => Ok(()),
                Some(s) => match err.dhcp.get(&s.bridge) {
                    Some(e) => Err(e.clone()),
                    None if !dhcp_up.get(s.bridge.as_str()).copied().unwrap_or(false) => {
                        Err(format!("the DHCP server of {} is not running", s.bridge))
                    }
                    None => dhcp::observe(&vpc_dir, hosts, &s.bridge, &n.spec.nic_id.to_string()),
                },
                None => Err("unknown subnet".to_owned()),
            };
            // Its public addresses on the uplink, translated by the rules loaded for it.
            let public: Vec<&String> = n.public().collect();
            let nat = match (&err.router, public.iter().find(|p| !a.router.addrs.contains(**p))) {
                _ if public.is_empty() => Ok(()),
                (Some(e), _) => Err(e.clone()),
                (None, Some(p)) => Err(format!("{p} is not on the uplink {}", router::UPLINK)),
                (None, None) if filter_gen == Some(n.spec.filter_generation) => Ok(()),
                (None, None) => Err(fail("its address translation is not loaded".to_owned())),
            };
            out.push(observed(&n.spec.nic_id, [tap, port, fdb, filt, dhcp, nat], filter_gen));
        }
        out
    }

    /// Converges every VPC of `spec` (see [`HostNetwork`]) and tears down the namespaces
    /// of VPCs no longer in it.
    fn converge(&self, spec: &HostNetworkSpec, verify: bool) -> ObservedNetwork {
        let mut nics = Vec::new();
        let mut wanted = BTreeSet::new();
        for vpc in &spec.vpcs {
            let ns = self.ns_name(vpc.vni);
            wanted.insert(ns.clone());
            match VpcPlan::new(&self.cfg.netns_prefix, &self.cfg.underlay_ip, vpc) {
                Ok(plan) => {
                    let survey = if verify { self.surveys().remove(&ns) } else { None };
                    let survey = survey.filter(|s| s.at.elapsed() < SURVEY_FRESH);
                    let applied = self.apply_vpc(&plan, verify, survey);
                    nics.extend(self.observe_vpc(&plan, &applied));
                    let Applied { err, view, loaded, dhcp, dhcp_inputs, router, meter } = applied;
                    // The view is trusted by the next change only when it was all read.
                    let view = err.all.is_none().then_some(view);
                    let router = err.router.is_none().then_some(router);
                    let ports = plan
                        .nics
                        .iter()
                        .map(|n| (n.spec.nic_id.clone(), n.spec.device.clone(), n.spec.ipv4.clone()))
                        .collect();
                    let state = VpcState { loaded, view, dhcp, dhcp_inputs, router, meter, ports };
                    self.vpcs().insert(ns.clone(), state);
                }
                Err(e) => {
                    for n in &vpc.nics {
                        nics.push(failed(&n.nic_id, &e));
                    }
                }
            }
        }
        let present: Vec<String> = if verify {
            self.surveys().clear();
            self.present_namespaces()
        } else {
            // A change apply tears down what it knows of; a verifying one also finds
            // namespaces a previous run of the agent left.
            self.vpcs().keys().cloned().collect()
        };
        for ns in present {
            if !wanted.contains(&ns)
                && let Err(e) = self.teardown(&ns)
            {
                tracing::warn!(namespace = %ns, error = %e, "tearing down a VPC namespace failed");
            }
        }
        ObservedNetwork { generation: spec.generation, vtep: Some(self.cfg.underlay_ip.clone()), nics }
    }
}

impl HostNetwork for LinuxBridge {
    fn apply(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        self.converge(spec, true)
    }

    fn apply_change(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        self.converge(spec, false)
    }

    fn survey(&self, spec: &HostNetworkSpec) -> bool {
        self.survey_all(spec);
        true
    }

    fn counter_period(&self) -> Option<std::time::Duration> {
        Some(self.cfg.counter_period)
    }

    fn counters(&self) -> Vec<meter::Reading> {
        let vpcs: Vec<(String, meter::Ports)> =
            self.vpcs().iter().map(|(ns, st)| (ns.clone(), st.ports.clone())).collect();
        let mut out = Vec::new();
        for (ns, ports) in vpcs {
            match meter::sample(&ns, &ports, None) {
                Ok(r) => out.extend(r),
                Err(e) => tracing::warn!(namespace = %ns, error = %e, "reading egress counters"),
            }
        }
        out
    }
}

impl TapOpener for LinuxBridge {
    fn open_tap(&self, vni: u32, device: &str) -> std::io::Result<std::os::fd::OwnedFd> {
        tap::open_existing(&links::ns_path(&self.ns_name(vni)), device)
    }
}
