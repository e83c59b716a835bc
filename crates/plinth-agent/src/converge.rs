//! Convergence of one host's guests, without I/O: the guest table and the step function
//! that turns (desired specs, what each guest is, what is in flight) into the runtime
//! steps to start and the observations to report.
//!
//! Owns the meaning of an [`InstanceSpec`]:
//! - `power`: `stopped` means prepared and not running (a new spec is prepared:
//!   `starting` → `stopped`); `running` means booted (`starting` → `running`); a running
//!   guest asked to stop reports `stopping` → `stopped`; `absent` (or a guest missing from
//!   the desired list) is destroyed, reported `absent` once, then forgotten.
//! - `boot_generation`: when above the `boot_generation` of the guest's current (or last
//!   attempted) boot, the guest is (re)booted: a `Boot` step on a stopped guest starts it,
//!   on a running one reboots it in place; either reports `starting` → `running`.
//!   A failed boot stays `failed` until the server asks for another boot this way (its
//!   restart policy), so the agent never retries a boot on its own.
//! - `generation`: a higher generation supersedes a lower one at any point; a step in
//!   flight is let finish, then the guest converges to the newest spec. Every report
//!   names the generation the agent acted on, and a report is sent only when it changes.
//!
//! - `volumes`: a running guest whose disks differ from its spec's (or are not known, as
//!   after an agent restart) gets a `Devices` step: its runtime hot-plugs and unplugs
//!   disks and grows them. What the guest has is reported with it ([`ObservedPlug`]s),
//!   from the runtime after every step and whenever the runtime says it changed (a guest
//!   releasing a disk long after it was asked). A `Devices` step is not repeated for the
//!   same generation and the same disks, so a guest that does not release a disk makes
//!   no spin.
//!
//! - Unasked changes from the runtime ([`GuestTable::happened`]): a guest that powered
//!   itself off is `stopped`; one that died is `crashed` (the server applies its restart
//!   policy by asking for a new boot).
//!
//! At most one step runs per guest. A failed prepare, shutdown or destroy is not retried
//! for the same spec generation (a destroy is retried at the next desired state), so a
//! broken runtime cannot make the agent spin. This module does not know how a runtime
//! carries out a step, nor how reports travel: the runner feeds it events and carries
//! out what it answers.

use crate::runtime::{Actual, Discovered, Happened, Op, OpKind};
use plinth_api::{InstanceId, InstanceSpec, ObservedInstance, ObservedPlug, ObservedState, PlugState, PowerState};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the table answers after an event: steps to start and observations to report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Runtime steps to start now (at most one per guest).
    pub ops: Vec<Op>,
    /// Observations to send to the server (at most one per guest).
    pub reports: Vec<ObservedInstance>,
}

impl Step {
    fn absorb(&mut self, g: GuestStep) {
        self.ops.extend(g.op);
        self.reports.extend(g.report);
    }
}

/// The step in flight on a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Prepare,
    Boot { boot_generation: i64 },
    Shutdown,
    Destroy,
    Devices,
}

#[derive(Clone, Debug)]
struct InFlight {
    tag: Tag,
    generation: i64,
    /// What to report while it runs (`None`: keep the last report).
    shows: Option<ObservedState>,
}

#[derive(Default)]
struct GuestStep {
    op: Option<Op>,
    report: Option<ObservedInstance>,
    forget: bool,
}

/// One guest as the agent knows it.
#[derive(Clone, Debug)]
pub struct Guest {
    instance_id: InstanceId,
    /// The newest spec (`None`: not in the desired list, so it must go).
    spec: Option<InstanceSpec>,
    /// The spec generation last acted on.
    generation: i64,
    actual: Actual,
    booted_generation: Option<i64>,
    /// Why it is `failed`.
    detail: Option<String>,
    /// It is `failed` because it died unasked (reported `crashed`), not because a boot
    /// failed.
    crashed: bool,
    /// A step other than boot failed at this generation: wait for a newer spec.
    blocked: Option<(i64, String)>,
    in_flight: Option<InFlight>,
    reported: Option<ObservedInstance>,
    /// The running guest's volume disks (`None`: not known).
    plugs: Option<Vec<ObservedPlug>>,
    /// The volumes of the spec the running guest was last brought to (by its boot or a
    /// `Devices` step).
    devices_spec: Option<Vec<plinth_api::InstanceVolumeSpec>>,
    /// The generation and disks a `Devices` step last started from.
    devices_tried: Option<(i64, Option<Vec<ObservedPlug>>)>,
}

fn observed(id: &InstanceId, state: ObservedState, generation: i64, detail: Option<String>) -> ObservedInstance {
    ObservedInstance {
        instance_id: id.clone(),
        generation,
        state,
        detail,
        evidence: None,
        timings: vec![],
        volumes: None,
    }
}

/// Every volume of `spec` plugged (what a boot gives the guest).
fn all_plugged(spec: Option<&InstanceSpec>) -> Vec<ObservedPlug> {
    spec.map(|s| {
        s.volumes
            .iter()
            .map(|v| ObservedPlug { attachment_id: v.attachment_id.clone(), state: PlugState::Plugged, detail: None })
            .collect()
    })
    .unwrap_or_default()
}

impl Guest {
    fn new(instance_id: InstanceId) -> Guest {
        Guest {
            instance_id,
            spec: None,
            generation: -1,
            actual: Actual::Absent,
            booted_generation: None,
            detail: None,
            crashed: false,
            blocked: None,
            in_flight: None,
            reported: None,
            plugs: None,
            devices_spec: None,
            devices_tried: None,
        }
    }

    /// The guest's id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }

    /// What the guest actually is.
    pub fn actual(&self) -> Actual {
        self.actual
    }

    /// The spec generation last acted on.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The `boot_generation` of its current (or last attempted) boot.
    pub fn booted_generation(&self) -> Option<i64> {
        self.booted_generation
    }

    /// Whether a step is running on it.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The last observation queued for the server.
    pub fn last_report(&self) -> Option<&ObservedInstance> {
        self.reported.as_ref()
    }

    fn wants(&self) -> PowerState {
        self.spec.as_ref().map_or(PowerState::Absent, |s| s.power)
    }

    fn target_generation(&self) -> i64 {
        self.spec.as_ref().map_or(self.generation, |s| s.generation)
    }

    /// Whether the spec asks for a boot the guest has not had.
    fn boot_due(&self) -> bool {
        let Some(spec) = &self.spec else { return false };
        match self.booted_generation {
            None => self.actual != Actual::Running,
            Some(b) => spec.boot_generation > b,
        }
    }

    /// Whether a running guest's disks must be brought to its spec.
    fn devices_due(&self) -> bool {
        let Some(spec) = &self.spec else { return false };
        let want: HashSet<_> = spec.volumes.iter().map(|v| &v.attachment_id).collect();
        let differs = match &self.plugs {
            None => true,
            Some(p) => {
                let have: HashSet<_> =
                    p.iter().filter(|p| p.state != PlugState::Failed).map(|p| &p.attachment_id).collect();
                want != have || self.devices_spec.as_ref() != Some(&spec.volumes)
            }
        };
        differs && self.devices_tried != Some((spec.generation, self.plugs.clone()))
    }

    /// Picks the next step when none is running.
    fn decide(&mut self) -> Option<Op> {
        let wants = self.wants();
        let generation = self.target_generation();
        // A failed guest is not running: asked to stop, it is stopped.
        if wants == PowerState::Stopped && self.actual == Actual::Failed {
            self.actual = Actual::Stopped;
            self.detail = None;
            self.crashed = false;
        }
        if let Some((at, _)) = &self.blocked {
            if *at >= generation {
                return None;
            }
            self.blocked = None;
        }
        use ObservedState as S;
        use PowerState as P;
        let (tag, shows) = match (wants, self.actual) {
            (P::Absent, Actual::Absent) => return None,
            (P::Absent, _) => (Tag::Destroy, None),
            (P::Stopped | P::Running, Actual::Absent) => (Tag::Prepare, Some(S::Starting)),
            (P::Stopped, Actual::Stopped | Actual::Failed) => return None,
            (P::Stopped, Actual::Running) => (Tag::Shutdown, Some(S::Stopping)),
            (P::Running, Actual::Stopped | Actual::Failed) if self.boot_due() => {
                let boot_generation = self.spec.as_ref().map_or(0, |s| s.boot_generation);
                (Tag::Boot { boot_generation }, Some(S::Starting))
            }
            (P::Running, Actual::Stopped | Actual::Failed) => return None,
            // A reboot: a boot of a running guest (the runtime resets it in place).
            (P::Running, Actual::Running) if self.boot_due() => {
                let boot_generation = self.spec.as_ref().map_or(0, |s| s.boot_generation);
                (Tag::Boot { boot_generation }, Some(S::Starting))
            }
            (P::Running, Actual::Running) if self.devices_due() => {
                self.devices_tried = Some((generation, self.plugs.clone()));
                (Tag::Devices, Some(S::Running))
            }
            (P::Running, Actual::Running) => return None,
        };
        let kind = match tag {
            Tag::Prepare => OpKind::Prepare(Box::new(self.spec.clone()?)),
            Tag::Boot { .. } => OpKind::Boot(Box::new(self.spec.clone()?)),
            Tag::Shutdown => OpKind::Shutdown,
            Tag::Destroy => OpKind::Destroy,
            Tag::Devices => OpKind::Devices(Box::new(self.spec.clone()?)),
        };
        self.generation = generation;
        self.in_flight = Some(InFlight { tag, generation, shows });
        Some(Op { instance_id: self.instance_id.clone(), generation, kind })
    }

    /// What the server should be told now (`None`: nothing new to say).
    fn observation(&self) -> Option<ObservedInstance> {
        let id = &self.instance_id;
        if let Some(f) = &self.in_flight {
            return f.shows.map(|s| observed(id, s, f.generation, None));
        }
        let generation = self.target_generation();
        let state = match self.actual {
            Actual::Absent if self.blocked.is_some() => ObservedState::Failed,
            Actual::Absent => ObservedState::Absent,
            Actual::Stopped => ObservedState::Stopped,
            Actual::Running => ObservedState::Running,
            Actual::Failed if self.crashed => ObservedState::Crashed,
            Actual::Failed => ObservedState::Failed,
        };
        let detail = match (&self.blocked, self.actual) {
            (Some((_, d)), _) => Some(d.clone()),
            (None, Actual::Failed) => self.detail.clone(),
            _ => None,
        };
        let mut o = observed(id, state, generation, detail);
        if self.actual == Actual::Running {
            o.volumes = self.plugs.clone();
        }
        Some(o)
    }

    fn step(&mut self) -> GuestStep {
        let op = if self.in_flight.is_none() { self.decide() } else { None };
        let report = self.observation().filter(|o| self.reported.as_ref() != Some(o));
        if let Some(r) = &report {
            self.reported = Some(r.clone());
        }
        let forget = self.in_flight.is_none() && self.actual == Actual::Absent && self.wants() == PowerState::Absent;
        GuestStep { op, report, forget }
    }
}

/// Counts of guests by the state last reported for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Guests last reported `starting`.
    pub starting: u64,
    /// Guests last reported `running`.
    pub running: u64,
    /// Guests last reported `stopping`.
    pub stopping: u64,
    /// Guests last reported `stopped`.
    pub stopped: u64,
    /// Guests last reported `failed`.
    pub failed: u64,
}

/// Every guest of one host, and the rules that converge them.
#[derive(Clone, Debug, Default)]
pub struct GuestTable {
    guests: BTreeMap<InstanceId, Guest>,
    /// Guests destroyed for a `power: absent` spec and forgotten, with that spec's
    /// generation, so the same spec is not acted on (and reported) again.
    tombstones: HashMap<InstanceId, i64>,
    /// Whether a desired state has been seen: until then nothing is decided (after an
    /// agent restart the discovered guests wait for it rather than being destroyed).
    synced: bool,
}

impl GuestTable {
    /// An empty table.
    pub fn new() -> GuestTable {
        GuestTable::default()
    }

    /// A table of the guests a runtime found on the host. Nothing is decided for them
    /// until the first desired state; then every one of them is reported.
    pub fn from_discovered(found: Vec<Discovered>) -> GuestTable {
        let mut table = GuestTable::new();
        for d in found {
            let mut g = Guest::new(d.instance_id.clone());
            g.generation = d.generation;
            g.actual = d.actual;
            g.booted_generation = d.booted_generation;
            g.detail = d.detail;
            table.guests.insert(d.instance_id, g);
        }
        table
    }

    /// The guests.
    pub fn guests(&self) -> impl Iterator<Item = &Guest> {
        self.guests.values()
    }

    /// One guest.
    pub fn get(&self, id: &InstanceId) -> Option<&Guest> {
        self.guests.get(id)
    }

    /// Number of guests held.
    pub fn len(&self) -> usize {
        self.guests.len()
    }

    /// Whether no guest is held.
    pub fn is_empty(&self) -> bool {
        self.guests.is_empty()
    }

    /// The volumes guests running (or being started or changed) have open.
    pub fn open_volumes(&self) -> std::collections::BTreeSet<plinth_api::VolumeId> {
        self.guests
            .values()
            .filter(|g| g.actual == Actual::Running || g.in_flight.is_some())
            .filter_map(|g| g.spec.as_ref())
            .flat_map(|s| s.boot_volume.iter().chain(s.volumes.iter()).map(|v| v.volume_id.clone()))
            .collect()
    }

    /// Counts by last reported state.
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        for g in self.guests.values() {
            match g.reported.as_ref().map(|r| r.state) {
                Some(ObservedState::Starting) => c.starting += 1,
                Some(ObservedState::Running) => c.running += 1,
                Some(ObservedState::Stopping) => c.stopping += 1,
                Some(ObservedState::Stopped) => c.stopped += 1,
                Some(ObservedState::Failed | ObservedState::Crashed) => c.failed += 1,
                Some(ObservedState::Absent) | None => {}
            }
        }
        c
    }

    /// Takes the host's desired guest list (the whole of it): newer specs replace older
    /// ones, guests missing from it are to go. Answers the steps to start and what to
    /// report.
    pub fn apply_desired(&mut self, specs: &[InstanceSpec]) -> Step {
        self.synced = true;
        let mut listed = HashSet::with_capacity(specs.len());
        for spec in specs {
            let id = &spec.instance_id;
            listed.insert(id.clone());
            if spec.power == PowerState::Absent && self.tombstones.get(id).is_some_and(|g| *g >= spec.generation) {
                continue;
            }
            self.tombstones.remove(id);
            let g = self.guests.entry(id.clone()).or_insert_with(|| Guest::new(id.clone()));
            if g.spec.as_ref().is_some_and(|s| s.generation > spec.generation) {
                tracing::debug!(instance = %id, generation = spec.generation, "ignoring an older spec");
                continue;
            }
            g.spec = Some(spec.clone());
        }
        for (id, g) in self.guests.iter_mut() {
            if !listed.contains(id)
                && let Some(old) = g.spec.take()
            {
                g.generation = g.generation.max(old.generation);
            }
            // A destroy that failed is tried again at each desired state.
            if g.wants() == PowerState::Absent && g.in_flight.is_none() {
                g.blocked = None;
            }
        }
        self.tombstones.retain(|id, _| listed.contains(id));
        self.step_all()
    }

    /// Records the end of the step running on guest `id` (`Err` holds the failure's
    /// detail), and answers what follows.
    pub fn complete(&mut self, id: &InstanceId, result: Result<(), String>) -> Step {
        self.complete_with(id, result, None)
    }

    /// [`GuestTable::complete`], with the guest's volume disks as its runtime found them
    /// after the step (`None`: the runtime does not tell; a boot or `Devices` step is
    /// then taken to have given the guest every disk of its spec).
    pub fn complete_with(
        &mut self,
        id: &InstanceId,
        result: Result<(), String>,
        plugs: Option<Vec<ObservedPlug>>,
    ) -> Step {
        let Some(g) = self.guests.get_mut(id) else { return Step::default() };
        let Some(f) = g.in_flight.take() else { return Step::default() };
        g.crashed = false;
        match (f.tag, &result) {
            (Tag::Boot { .. } | Tag::Devices, Ok(())) => {
                g.devices_spec = g.spec.as_ref().map(|s| s.volumes.clone());
                g.plugs = Some(plugs.unwrap_or_else(|| all_plugged(g.spec.as_ref())));
            }
            (Tag::Devices, Err(_)) => {
                g.devices_spec = g.spec.as_ref().map(|s| s.volumes.clone());
                g.plugs = plugs.or(g.plugs.take());
            }
            _ => {
                g.plugs = None;
                g.devices_spec = None;
            }
        }
        if f.tag == Tag::Devices {
            // Not repeated until the spec or the disks change.
            g.devices_tried = Some((f.generation, g.plugs.clone()));
        }
        match (f.tag, result) {
            (Tag::Prepare, Ok(())) => g.actual = Actual::Stopped,
            (Tag::Boot { boot_generation }, Ok(())) => {
                g.actual = Actual::Running;
                g.booted_generation = Some(boot_generation);
                g.detail = None;
            }
            (Tag::Boot { boot_generation }, Err(detail)) => {
                g.actual = Actual::Failed;
                g.booted_generation = Some(boot_generation);
                g.detail = Some(detail);
            }
            (Tag::Shutdown, Ok(())) => g.actual = Actual::Stopped,
            (Tag::Destroy, Ok(())) => {
                g.actual = Actual::Absent;
                g.booted_generation = None;
                g.detail = None;
            }
            (Tag::Prepare | Tag::Shutdown | Tag::Destroy, Err(detail)) => g.blocked = Some((f.generation, detail)),
            // The guest runs on; what it has is in `plugs`, and the step is not repeated
            // for the same generation and disks.
            (Tag::Devices, Ok(())) => {}
            (Tag::Devices, Err(detail)) => {
                tracing::warn!(instance = %id, "volume disks not brought to the spec: {detail}");
            }
        }
        if !self.synced {
            return Step::default();
        }
        let mut step = Step::default();
        let gs = g.step();
        let forget = gs.forget;
        step.absorb(gs);
        if forget {
            self.forget(id);
        }
        step
    }

    /// Records something that happened to guest `id` unasked (from its runtime) and
    /// answers what follows. While a step runs on the guest the event is left to that
    /// step's result; a guest not held (or not running) is not affected.
    pub fn happened(&mut self, id: &InstanceId, what: Happened) -> Step {
        let Some(g) = self.guests.get_mut(id) else { return Step::default() };
        if g.in_flight.is_some() || g.actual != Actual::Running {
            return Step::default();
        }
        match what {
            Happened::PoweredOff => {
                g.actual = Actual::Stopped;
                g.detail = None;
                g.plugs = None;
            }
            Happened::Crashed(detail) => {
                g.actual = Actual::Failed;
                g.detail = Some(detail);
                g.crashed = true;
                g.plugs = None;
            }
            Happened::Reset => return Step::default(),
            Happened::Plugs(plugs) => g.plugs = Some(plugs),
        }
        if !self.synced {
            return Step::default();
        }
        let mut step = Step::default();
        step.absorb(g.step());
        step
    }

    fn forget(&mut self, id: &InstanceId) {
        if let Some(g) = self.guests.remove(id)
            && let Some(spec) = g.spec
        {
            self.tombstones.insert(id.clone(), spec.generation);
        }
    }

    fn step_all(&mut self) -> Step {
        let mut step = Step::default();
        let mut gone = Vec::new();
        for (id, g) in self.guests.iter_mut() {
            let gs = g.step();
            if gs.forget {
                gone.push(id.clone());
            }
            step.absorb(gs);
        }
        for id in gone {
            self.forget(&id);
        }
        step
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use plinth_api::{Claim, CpuPolicy, RuntimeClass};

    pub(crate) fn spec(id: &InstanceId, generation: i64, power: PowerState, boot_generation: i64) -> InstanceSpec {
        InstanceSpec {
            instance_id: id.clone(),
            name: "web-1".into(),
            generation,
            power,
            boot_generation,
            runtime_class: RuntimeClass::Vm,
            image: "debian-12".into(),
            claim: Claim {
                vcpus: 2,
                cpu_policy: CpuPolicy::Shared,
                memory_mib: 2048,
                disk_gib: 20,
                numa_nodes: vec![],
                cpus: vec![],
                hugepages: vec![],
                gpus: vec![],
                tcg: false,
                rack_id: None,
            },
            ssh_keys: vec![],
            user_data: None,
            boot: None,
            nics: Vec::new(),
            cloud_init: None,
            volumes: Vec::new(),
            boot_volume: None,
        }
    }

    fn kinds(step: &Step) -> Vec<&'static str> {
        step.ops.iter().map(|o| o.kind.name()).collect()
    }

    fn states(step: &Step) -> Vec<(ObservedState, i64)> {
        step.reports.iter().map(|r| (r.state, r.generation)).collect()
    }

    use ObservedState as S;
    use PowerState as P;

    /// Runs every step to success, collecting the reports, until nothing is in flight.
    fn settle(t: &mut GuestTable, mut step: Step) -> Vec<(ObservedState, i64)> {
        let mut seen = states(&step);
        while let Some(op) = step.ops.pop() {
            let next = t.complete(&op.instance_id, Ok(()));
            seen.extend(states(&next));
            step.ops.extend(next.ops);
        }
        seen
    }

    fn with_volume(mut s: InstanceSpec, slot: u8) -> (InstanceSpec, ObservedPlug) {
        let v = plinth_api::InstanceVolumeSpec {
            attachment_id: plinth_api::VolumeAttachmentId::generate(),
            volume_id: plinth_api::VolumeId::generate(),
            slot,
            serial: format!("SERIAL{slot}"),
            encrypted: true,
            size_bytes: 1 << 30,
            qos: Default::default(),
            connection: None,
            layers: Vec::new(),
        };
        let p = ObservedPlug { attachment_id: v.attachment_id.clone(), state: PlugState::Plugged, detail: None };
        s.volumes.push(v);
        (s, p)
    }

    #[test]
    fn a_running_guests_disks_follow_its_spec_once_per_generation_and_disks() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        settle(&mut t, s);
        assert_eq!(t.get(&id).unwrap().last_report().unwrap().volumes, Some(vec![]), "a booted guest has no disk");

        // An attach: a Devices step; its end reports the disk the runtime found.
        let (s2, plug) = with_volume(spec(&id, 2, P::Running, 1), 0);
        let s = t.apply_desired(std::slice::from_ref(&s2));
        assert_eq!(kinds(&s), ["devices"]);
        assert_eq!((s.reports[0].state, s.reports[0].volumes.as_ref()), (S::Running, None), "disks unknown meanwhile");
        let s = t.complete_with(&id, Ok(()), Some(vec![plug.clone()]));
        assert!(s.ops.is_empty());
        assert_eq!(s.reports[0].volumes, Some(vec![plug.clone()]));

        // A detach the guest does not answer at once: unplugging, and no step again for
        // the same generation and disks (no spin).
        let s = t.apply_desired(&[spec(&id, 3, P::Running, 1)]);
        assert_eq!(kinds(&s), ["devices"]);
        let pending = ObservedPlug { state: PlugState::Unplugging, ..plug.clone() };
        let s = t.complete_with(&id, Err("waiting".into()), Some(vec![pending.clone()]));
        assert!(s.ops.is_empty(), "not repeated: {:?}", kinds(&s));
        assert_eq!(s.reports[0].volumes, Some(vec![pending]));
        assert!(t.apply_desired(&[spec(&id, 3, P::Running, 1)]).ops.is_empty());
        // The guest lets go later: the runtime says so, and the report follows.
        let s = t.happened(&id, Happened::Plugs(vec![]));
        assert_eq!(s.reports[0].volumes, Some(vec![]));
        assert!(s.ops.is_empty(), "the disks match the spec now");

        // Stopped: disks are not reported (the server reads `stopped`).
        let s = t.apply_desired(&[spec(&id, 4, P::Stopped, 1)]);
        let seen = settle(&mut t, s);
        assert_eq!(seen.last(), Some(&(S::Stopped, 4)));
        assert_eq!(t.get(&id).unwrap().last_report().unwrap().volumes, None);
    }

    #[test]
    fn a_guest_found_after_a_restart_has_its_disks_read_once() {
        let id = InstanceId::generate();
        let found = Discovered {
            instance_id: id.clone(),
            generation: 2,
            actual: Actual::Running,
            booted_generation: Some(1),
            detail: None,
        };
        let mut t = GuestTable::from_discovered(vec![found]);
        let (s2, plug) = with_volume(spec(&id, 2, P::Running, 1), 3);
        let s = t.apply_desired(std::slice::from_ref(&s2));
        assert_eq!(kinds(&s), ["devices"], "the disks are not known after a restart");
        let s = t.complete_with(&id, Ok(()), Some(vec![plug.clone()]));
        assert!(s.ops.is_empty());
        assert_eq!(s.reports[0].volumes, Some(vec![plug]));
    }

    #[test]
    fn a_new_running_spec_is_prepared_then_booted() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        assert_eq!(kinds(&s), ["prepare"]);
        assert_eq!(states(&s), [(S::Starting, 1)]);
        let s = t.complete(&id, Ok(()));
        assert_eq!(kinds(&s), ["boot"]);
        assert!(s.reports.is_empty(), "still starting: nothing new to say");
        let s = t.complete(&id, Ok(()));
        assert!(s.ops.is_empty());
        assert_eq!(states(&s), [(S::Running, 1)]);
        assert_eq!(t.get(&id).map(|g| g.booted_generation()), Some(Some(1)));
        // The same desired state again changes nothing.
        assert_eq!(t.apply_desired(&[spec(&id, 1, P::Running, 1)]), Step::default());
    }

    #[test]
    fn a_new_stopped_spec_is_prepared_then_started_and_stopped() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Stopped, 0)]);
        assert_eq!(settle(&mut t, s), [(S::Starting, 1), (S::Stopped, 1)]);
        let s = t.apply_desired(&[spec(&id, 2, P::Running, 2)]);
        assert_eq!(kinds(&s), ["boot"]);
        assert_eq!(settle(&mut t, s), [(S::Starting, 2), (S::Running, 2)]);
        let s = t.apply_desired(&[spec(&id, 3, P::Stopped, 2)]);
        assert_eq!(kinds(&s), ["shutdown"]);
        assert_eq!(settle(&mut t, s), [(S::Stopping, 3), (S::Stopped, 3)]);
        // Start again: a start is a boot asked at a newer boot_generation.
        let s = t.apply_desired(&[spec(&id, 4, P::Running, 4)]);
        assert_eq!(settle(&mut t, s), [(S::Starting, 4), (S::Running, 4)]);
    }

    #[test]
    fn a_higher_boot_generation_reboots() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        settle(&mut t, s);
        // A reboot is one boot step on the running guest (the runtime resets it in place).
        let s = t.apply_desired(&[spec(&id, 2, P::Running, 2)]);
        assert_eq!(kinds(&s), ["boot"]);
        assert_eq!(states(&s), [(S::Starting, 2)]);
        let s = t.complete(&id, Ok(()));
        assert!(s.ops.is_empty());
        assert_eq!(states(&s), [(S::Running, 2)]);
        // A newer spec with the same boot_generation is acknowledged without a reboot.
        let s = t.apply_desired(&[spec(&id, 3, P::Running, 2)]);
        assert!(s.ops.is_empty());
        assert_eq!(states(&s), [(S::Running, 3)]);
    }

    #[test]
    fn a_newer_spec_supersedes_one_in_flight() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        // Stop asked while preparing for a start: no boot happens.
        t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        let s = t.apply_desired(&[spec(&id, 2, P::Stopped, 1)]);
        assert_eq!(s, Step::default(), "the prepare in flight is let finish");
        let s = t.complete(&id, Ok(()));
        assert!(s.ops.is_empty());
        assert_eq!(states(&s), [(S::Stopped, 2)]);

        // Stop asked while booting: the boot finishes, then the guest is shut down.
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        assert_eq!(kinds(&t.complete(&id, Ok(()))), ["boot"]);
        assert_eq!(t.apply_desired(&[spec(&id, 2, P::Stopped, 1)]), Step::default());
        let s = t.complete(&id, Ok(()));
        assert_eq!(kinds(&s), ["shutdown"]);
        assert_eq!(states(&s), [(S::Stopping, 2)]);
        assert_eq!(states(&t.complete(&id, Ok(()))), [(S::Stopped, 2)]);

        // An older spec arriving late is ignored.
        let s = t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        assert_eq!(s, Step::default());
        assert_eq!(t.get(&id).map(|g| g.generation()), Some(2));
    }

    #[test]
    fn absent_guests_are_destroyed_reported_once_and_forgotten() {
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&a, 1, P::Running, 1), spec(&b, 1, P::Stopped, 0)]);
        settle(&mut t, s);

        // `a` is asked absent: destroyed (nothing said meanwhile), then `absent` once.
        let s = t.apply_desired(&[spec(&a, 2, P::Absent, 1), spec(&b, 1, P::Stopped, 0)]);
        assert_eq!(kinds(&s), ["destroy"]);
        assert!(s.reports.is_empty());
        let s = t.complete(&a, Ok(()));
        assert_eq!(states(&s), [(S::Absent, 2)]);
        assert!(t.get(&a).is_none(), "forgotten");
        assert_eq!(t.apply_desired(&[spec(&a, 2, P::Absent, 1), spec(&b, 1, P::Stopped, 0)]), Step::default());

        // `b` disappears from the list: destroyed, `absent` at the last generation acted on.
        let s = t.apply_desired(&[spec(&a, 2, P::Absent, 1)]);
        assert_eq!(kinds(&s), ["destroy"]);
        assert_eq!(states(&t.complete(&b, Ok(()))), [(S::Absent, 1)]);
        assert!(t.is_empty());
        assert_eq!(t.apply_desired(&[]), Step::default());
    }

    #[test]
    fn an_unknown_absent_spec_is_reported_absent_once() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 5, P::Absent, 0)]);
        assert!(s.ops.is_empty());
        assert_eq!(states(&s), [(S::Absent, 5)]);
        assert!(t.is_empty());
        assert_eq!(t.apply_desired(&[spec(&id, 5, P::Absent, 0)]), Step::default());
    }

    #[test]
    fn a_failed_boot_stays_failed_until_a_new_boot_is_asked() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        t.complete(&id, Ok(()));
        let s = t.complete(&id, Err("sim: boot failed".into()));
        assert!(s.ops.is_empty());
        assert_eq!(s.reports.len(), 1);
        assert_eq!((s.reports[0].state, s.reports[0].generation), (S::Failed, 1));
        assert_eq!(s.reports[0].detail.as_deref(), Some("sim: boot failed"));
        // No retry on its own.
        assert_eq!(t.apply_desired(&[spec(&id, 1, P::Running, 1)]), Step::default());
        // The restart policy asks for a new boot.
        let s = t.apply_desired(&[spec(&id, 2, P::Running, 2)]);
        assert_eq!(kinds(&s), ["boot"]);
        assert_eq!(settle(&mut t, s), [(S::Starting, 2), (S::Running, 2)]);
    }

    #[test]
    fn a_failed_guest_asked_to_stop_is_stopped() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        t.complete(&id, Ok(()));
        t.complete(&id, Err("boom".into()));
        let s = t.apply_desired(&[spec(&id, 2, P::Stopped, 1)]);
        assert!(s.ops.is_empty());
        assert_eq!(states(&s), [(S::Stopped, 2)]);
        assert_eq!(s.reports[0].detail, None);
    }

    #[test]
    fn a_failed_prepare_is_not_retried_at_the_same_generation() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        t.apply_desired(&[spec(&id, 1, P::Stopped, 0)]);
        let s = t.complete(&id, Err("no disk".into()));
        assert_eq!(states(&s), [(S::Failed, 1)]);
        assert_eq!(t.apply_desired(&[spec(&id, 1, P::Stopped, 0)]), Step::default());
        let s = t.apply_desired(&[spec(&id, 2, P::Stopped, 0)]);
        assert_eq!(kinds(&s), ["prepare"]);
        assert_eq!(states(&s), [(S::Starting, 2)]);
    }

    #[test]
    fn a_failed_destroy_is_retried_at_the_next_desired_state() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Stopped, 0)]);
        settle(&mut t, s);
        assert_eq!(kinds(&t.apply_desired(&[])), ["destroy"]);
        let s = t.complete(&id, Err("busy".into()));
        assert_eq!(states(&s), [(S::Stopped, 1)]);
        assert_eq!(s.reports[0].detail.as_deref(), Some("busy"));
        let s = t.apply_desired(&[]);
        assert_eq!(kinds(&s), ["destroy"]);
        assert_eq!(states(&t.complete(&id, Ok(()))), [(S::Absent, 1)]);
        assert!(t.is_empty());
    }

    #[test]
    fn discovered_guests_wait_for_the_desired_state_then_are_all_reported() {
        let kept = InstanceId::generate();
        let extra = InstanceId::generate();
        let mut t = GuestTable::from_discovered(vec![
            Discovered {
                instance_id: kept.clone(),
                generation: 3,
                actual: Actual::Running,
                booted_generation: Some(2),
                detail: None,
            },
            Discovered {
                instance_id: extra.clone(),
                generation: 1,
                actual: Actual::Stopped,
                booted_generation: None,
                detail: None,
            },
        ]);
        assert_eq!(t.len(), 2);
        let s = t.apply_desired(&[spec(&kept, 3, P::Running, 2)]);
        // The running guest is not rebooted (its disks are read), and is reported again;
        // the other one goes.
        assert_eq!(s.ops.len(), 2);
        assert_eq!(s.ops[0].instance_id, kept);
        assert_eq!(s.ops[0].kind.name(), "devices");
        assert_eq!(s.ops[1].instance_id, extra);
        assert_eq!(s.ops[1].kind, OpKind::Destroy);
        assert_eq!(states(&s), [(S::Running, 3)]);
        assert_eq!(states(&t.complete(&extra, Ok(()))), [(S::Absent, 1)]);
    }

    #[test]
    fn a_guest_that_dies_unasked_is_crashed_until_a_new_boot() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        settle(&mut t, s);
        let s = t.happened(&id, Happened::Crashed("qemu exited (killed by signal 9)".into()));
        assert!(s.ops.is_empty(), "the agent never restarts a guest on its own");
        assert_eq!(states(&s), [(S::Crashed, 1)]);
        assert_eq!(s.reports[0].detail.as_deref(), Some("qemu exited (killed by signal 9)"));
        // The server's restart policy asks for a new boot.
        let s = t.apply_desired(&[spec(&id, 2, P::Running, 2)]);
        assert_eq!(kinds(&s), ["boot"]);
        assert_eq!(settle(&mut t, s), [(S::Starting, 2), (S::Running, 2)]);
    }

    #[test]
    fn a_guest_that_powers_itself_off_is_stopped_and_not_booted_again() {
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        settle(&mut t, s);
        let s = t.happened(&id, Happened::PoweredOff);
        assert!(s.ops.is_empty());
        assert_eq!(states(&s), [(S::Stopped, 1)]);
        // The same desired state again changes nothing.
        let s = t.apply_desired(&[spec(&id, 1, P::Running, 1)]);
        assert!(s.ops.is_empty() && s.reports.is_empty());
        // Events about a guest with a step in flight are left to the step.
        let s = t.apply_desired(&[spec(&id, 2, P::Running, 2)]);
        assert_eq!(kinds(&s), ["boot"]);
        assert!(t.happened(&id, Happened::Crashed("x".into())).reports.is_empty());
    }

    #[test]
    fn census_counts_reported_states() {
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&a, 1, P::Running, 1), spec(&b, 1, P::Stopped, 0)]);
        assert_eq!(t.census(), Census { starting: 2, ..Census::default() });
        settle(&mut t, s);
        assert_eq!(t.census(), Census { running: 1, stopped: 1, ..Census::default() });
    }
}
