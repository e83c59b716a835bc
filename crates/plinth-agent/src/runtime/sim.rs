//! The `sim` runtime: simulated guests for scale tests. **No guest runs.**
//!
//! Each step (prepare, boot, shutdown, destroy) takes `delay` (jittered ±20 %) and then
//! succeeds, except that every K-th boot of a host fails when `fail_every` is K, so that
//! restart policies can be exercised. Prepare checks the guest's claim against the
//! simulated host (pinned CPUs, NUMA nodes and GPUs must exist on it) and fails the guest
//! if not, which makes scheduler bugs visible in scale tests; a CPU or GPU claimed by two
//! guests of the host is logged as a warning.
//!
//! The simulated guests are kept in a per-host file (`sim-guests.json`, beside the host's
//! credential), so that, as with real guests, they survive an agent restart and are
//! rediscovered. Owns only this simulation; what to do with a guest is decided in
//! [`crate::converge`].

use crate::backoff::Jitter;
use crate::runtime::{Actual, Discovered, Op, OpKind, Runtime, RuntimeError};
use crate::state::write_private;
use plinth_api::{HostInventory, InstanceId, InstanceSpec};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// How the simulated guests behave.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Time per step (each one jittered ±20 %).
    pub delay: Duration,
    /// Every K-th boot on the host fails (`None`: none fails).
    pub fail_every: Option<u32>,
    /// Seed of the timing jitter.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { delay: Duration::from_millis(300), fail_every: None, seed: 0 }
    }
}

/// What a simulated host has that a claim can name.
#[derive(Clone, Debug, Default)]
struct HostFacts {
    cpus: BTreeSet<u32>,
    numa_nodes: BTreeSet<u32>,
    gpus: BTreeSet<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct SimGuest {
    generation: i64,
    actual: Actual,
    booted_generation: Option<i64>,
    detail: Option<String>,
    /// Pinned host CPUs and GPUs it holds.
    cpus: Vec<u32>,
    gpus: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct SimState {
    /// Boots attempted on this host (the `fail_every` counter).
    boots: u64,
    guests: BTreeMap<InstanceId, SimGuest>,
}

/// The per-host file.
#[derive(Deserialize, Serialize)]
struct SimFile {
    runtime: String,
    note: String,
    #[serde(flatten)]
    state: SimState,
}

const NOTE: &str = "sim runtime: simulated guests, no guest runs";

/// The simulated runtime of one simulated host.
pub struct SimRuntime {
    config: SimConfig,
    host: HostFacts,
    file: Option<PathBuf>,
    state: tokio::sync::Mutex<SimState>,
    jitter: std::sync::Mutex<Jitter>,
}

impl SimRuntime {
    /// A simulated runtime for a host with `inventory`, keeping its guests in `file`
    /// (`None`: in memory only). Guests already in the file are taken back.
    pub fn new(
        config: SimConfig,
        inventory: &HostInventory,
        file: Option<PathBuf>,
    ) -> Result<SimRuntime, RuntimeError> {
        let host = HostFacts {
            cpus: inventory.numa_nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect(),
            numa_nodes: inventory.numa_nodes.iter().map(|n| n.id).collect(),
            gpus: inventory.gpus.iter().map(|g| g.pci_address.clone()).collect(),
        };
        let state = match &file {
            Some(path) => load(path)?,
            None => SimState::default(),
        };
        let jitter = Jitter::seeded(config.seed);
        Ok(SimRuntime {
            config,
            host,
            file,
            state: tokio::sync::Mutex::new(state),
            jitter: std::sync::Mutex::new(jitter),
        })
    }

    fn delay(&self) -> Duration {
        if self.config.delay.is_zero() {
            return Duration::ZERO;
        }
        let mut j = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
        j.spread(self.config.delay, 0.2)
    }

    async fn persist(&self, state: &SimState) -> Result<(), RuntimeError> {
        let Some(path) = self.file.clone() else { return Ok(()) };
        let file = SimFile { runtime: "sim".into(), note: NOTE.into(), state: state.clone() };
        let bad = |reason: String| RuntimeError::State { path: path.display().to_string(), reason };
        let text = serde_json::to_vec_pretty(&file).map_err(|e| bad(e.to_string()))?;
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_private(&target, &text, false))
            .await
            .map_err(|e| bad(e.to_string()))?
            .map_err(|e| bad(e.to_string()))
    }

    /// Checks a claim against the host; answers the failure detail.
    fn check_claim(&self, spec: &InstanceSpec, state: &SimState) -> Result<(), String> {
        let claim = &spec.claim;
        if let Some(c) = claim.cpus.iter().find(|c| !self.host.cpus.contains(c)) {
            return Err(format!("sim: claim names host CPU {c}, which this simulated host does not have"));
        }
        if let Some(n) = claim.numa_nodes.iter().find(|n| !self.host.numa_nodes.contains(n)) {
            return Err(format!("sim: claim names NUMA node {n}, which this simulated host does not have"));
        }
        if let Some(g) = claim.gpus.iter().find(|g| !self.host.gpus.contains(*g)) {
            return Err(format!("sim: claim names GPU {g}, which this simulated host does not have"));
        }
        for (other, guest) in &state.guests {
            if *other == spec.instance_id {
                continue;
            }
            if let Some(c) = claim.cpus.iter().find(|c| guest.cpus.contains(c)) {
                tracing::warn!(instance = %spec.instance_id, other = %other, cpu = c, "sim: pinned CPU claimed by two guests of this host");
            }
            if let Some(g) = claim.gpus.iter().find(|g| guest.gpus.contains(g)) {
                tracing::warn!(instance = %spec.instance_id, other = %other, gpu = %g, "sim: GPU claimed by two guests of this host");
            }
        }
        Ok(())
    }

    /// Carries out `op` on the simulated state (after the simulated delay).
    fn apply(&self, state: &mut SimState, op: Op) -> Result<(), RuntimeError> {
        let id = op.instance_id;
        match op.kind {
            OpKind::Prepare(spec) => {
                self.check_claim(&spec, state).map_err(RuntimeError::Failed)?;
                state.guests.insert(
                    id,
                    SimGuest {
                        generation: op.generation,
                        actual: Actual::Stopped,
                        booted_generation: None,
                        detail: None,
                        cpus: spec.claim.cpus.clone(),
                        gpus: spec.claim.gpus.clone(),
                    },
                );
                Ok(())
            }
            OpKind::Boot(spec) => {
                let Some(guest) = state.guests.get_mut(&id) else {
                    return Err(RuntimeError::Failed("sim: boot of a guest that was never prepared".into()));
                };
                state.boots += 1;
                guest.generation = op.generation;
                guest.booted_generation = Some(spec.boot_generation);
                // Resizes and rebuilds come with a boot: the guest holds what the spec claims.
                guest.cpus = spec.claim.cpus.clone();
                guest.gpus = spec.claim.gpus.clone();
                match self.config.fail_every {
                    Some(k) if k > 0 && state.boots.is_multiple_of(u64::from(k)) => {
                        let detail = format!(
                            "sim: simulated boot failure (boot {} of this simulated host; --sim-fail-every {k})",
                            state.boots
                        );
                        guest.actual = Actual::Failed;
                        guest.detail = Some(detail.clone());
                        Err(RuntimeError::Failed(detail))
                    }
                    _ => {
                        guest.actual = Actual::Running;
                        guest.detail = None;
                        Ok(())
                    }
                }
            }
            OpKind::Shutdown => {
                let Some(guest) = state.guests.get_mut(&id) else {
                    return Err(RuntimeError::Failed("sim: shutdown of a guest that is not here".into()));
                };
                guest.generation = op.generation;
                guest.actual = Actual::Stopped;
                Ok(())
            }
            OpKind::Destroy => {
                state.guests.remove(&id);
                Ok(())
            }
            // A simulated guest has whatever disks its spec names, at once.
            OpKind::Devices(_) => match state.guests.get_mut(&id) {
                Some(guest) if guest.actual == Actual::Running => {
                    guest.generation = op.generation;
                    Ok(())
                }
                _ => Err(RuntimeError::Failed("sim: volume disks of a guest that is not running".into())),
            },
        }
    }
}

fn load(path: &std::path::Path) -> Result<SimState, RuntimeError> {
    let bad = |reason: String| RuntimeError::State { path: path.display().to_string(), reason };
    match std::fs::read(path) {
        Ok(bytes) => {
            let file: SimFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            if file.runtime != "sim" {
                return Err(bad(format!("kept by runtime {:?}, not sim", file.runtime)));
            }
            Ok(file.state)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SimState::default()),
        Err(e) => Err(bad(e.to_string())),
    }
}

impl Runtime for SimRuntime {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn discover(&self) -> Result<Vec<Discovered>, RuntimeError> {
        let state = self.state.lock().await;
        if !state.guests.is_empty() {
            tracing::debug!(guests = state.guests.len(), "sim runtime: rediscovered simulated guests (no guest runs)");
        }
        Ok(state
            .guests
            .iter()
            .map(|(id, g)| Discovered {
                instance_id: id.clone(),
                generation: g.generation,
                actual: g.actual,
                booted_generation: g.booted_generation,
                detail: g.detail.clone(),
            })
            .collect())
    }

    async fn execute(&self, op: Op) -> Result<(), RuntimeError> {
        let delay = self.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.state.lock().await;
        let (id, step) = (op.instance_id.clone(), op.kind.name());
        let result = self.apply(&mut state, op);
        self.persist(&state).await?;
        match &result {
            Ok(()) => tracing::debug!(instance = %id, step, "sim runtime: simulated step done (no guest runs)"),
            Err(e) => tracing::info!(instance = %id, step, "sim runtime: simulated step failed: {e}"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::GuestTable;
    use crate::converge::tests::spec;
    use crate::sim::inventory::profile_for;
    use plinth_api::{ObservedState as S, PowerState as P};

    /// Carries out every step the table asks for, through the runtime, until the table
    /// is settled; answers the reports in order.
    async fn drive(rt: &SimRuntime, t: &mut GuestTable, step: crate::Step) -> Vec<(S, i64, Option<String>)> {
        let mut seen: Vec<_> = step.reports.into_iter().map(|r| (r.state, r.generation, r.detail)).collect();
        let mut ops = step.ops;
        while let Some(op) = ops.pop() {
            let id = op.instance_id.clone();
            let result = rt.execute(op).await.map_err(|e| e.to_string());
            let next = t.complete(&id, result);
            seen.extend(next.reports.into_iter().map(|r| (r.state, r.generation, r.detail)));
            ops.extend(next.ops);
        }
        seen
    }

    fn quick(fail_every: Option<u32>) -> SimConfig {
        SimConfig { delay: Duration::ZERO, fail_every, seed: 1 }
    }

    fn states(v: &[(S, i64, Option<String>)]) -> Vec<(S, i64)> {
        v.iter().map(|(s, g, _)| (*s, *g)).collect()
    }

    #[tokio::test]
    async fn a_guest_lifecycle_through_the_sim_runtime() {
        let rt = SimRuntime::new(quick(None), &profile_for(0), None).expect("runtime");
        let id = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&id, 1, P::Stopped, 0)]);
        assert_eq!(states(&drive(&rt, &mut t, s).await), [(S::Starting, 1), (S::Stopped, 1)]);
        let s = t.apply_desired(&[spec(&id, 2, P::Running, 2)]);
        assert_eq!(states(&drive(&rt, &mut t, s).await), [(S::Starting, 2), (S::Running, 2)]);
        // Reboot.
        let s = t.apply_desired(&[spec(&id, 3, P::Running, 3)]);
        assert_eq!(states(&drive(&rt, &mut t, s).await), [(S::Starting, 3), (S::Running, 3)]);
        let s = t.apply_desired(&[spec(&id, 4, P::Stopped, 3)]);
        assert_eq!(states(&drive(&rt, &mut t, s).await), [(S::Stopping, 4), (S::Stopped, 4)]);
        let s = t.apply_desired(&[spec(&id, 5, P::Absent, 3)]);
        assert_eq!(states(&drive(&rt, &mut t, s).await), [(S::Absent, 5)]);
        assert!(t.is_empty());
        assert!(rt.discover().await.expect("discover").is_empty());
    }

    #[tokio::test]
    async fn every_kth_boot_fails_until_restarted() {
        let rt = SimRuntime::new(quick(Some(2)), &profile_for(0), None).expect("runtime");
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[spec(&a, 1, P::Running, 1)]);
        assert_eq!(states(&drive(&rt, &mut t, s).await), [(S::Starting, 1), (S::Running, 1)]);
        // The second boot on the host fails, with a detail that says sim.
        let s = t.apply_desired(&[spec(&a, 1, P::Running, 1), spec(&b, 1, P::Running, 1)]);
        let seen = drive(&rt, &mut t, s).await;
        assert_eq!(states(&seen), [(S::Starting, 1), (S::Failed, 1)]);
        let detail = seen[1].2.clone().unwrap_or_default();
        assert!(detail.starts_with("sim: simulated boot failure"), "{detail}");
        // The server's restart policy asks for a new boot: the third boot succeeds.
        let s = t.apply_desired(&[spec(&a, 1, P::Running, 1), spec(&b, 2, P::Running, 2)]);
        assert_eq!(states(&drive(&rt, &mut t, s).await), [(S::Starting, 2), (S::Running, 2)]);
    }

    #[tokio::test]
    async fn claims_are_checked_against_the_simulated_host() {
        let rt = SimRuntime::new(quick(None), &profile_for(0), None).expect("runtime");
        let id = InstanceId::generate();
        let mut bad = spec(&id, 1, P::Running, 1);
        bad.claim.gpus = vec!["0000:1a:00.0".into()];
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[bad]);
        let seen = drive(&rt, &mut t, s).await;
        assert_eq!(states(&seen), [(S::Starting, 1), (S::Failed, 1)]);
        assert!(seen[1].2.as_deref().unwrap_or_default().contains("GPU 0000:1a:00.0"));

        let gpu_host = SimRuntime::new(quick(None), &profile_for(9), None).expect("runtime");
        let mut good = spec(&id, 1, P::Running, 1);
        good.claim.gpus = vec!["0000:1a:00.0".into()];
        good.claim.cpus = vec![16, 17];
        good.claim.numa_nodes = vec![1];
        let mut t = GuestTable::new();
        let s = t.apply_desired(&[good]);
        assert_eq!(states(&drive(&gpu_host, &mut t, s).await), [(S::Starting, 1), (S::Running, 1)]);
    }

    #[tokio::test]
    async fn guests_survive_an_agent_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sim-guests.json");
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        let desired = [spec(&a, 2, P::Running, 2), spec(&b, 1, P::Stopped, 0)];
        {
            let rt = SimRuntime::new(quick(None), &profile_for(0), Some(file.clone())).expect("runtime");
            let mut t = GuestTable::new();
            let s = t.apply_desired(&desired);
            drive(&rt, &mut t, s).await;
        }
        let text = std::fs::read_to_string(&file).expect("file");
        assert!(text.contains("no guest runs"));
        // A new agent process: the guests are rediscovered, not rebooted, and all reported.
        let rt = SimRuntime::new(quick(None), &profile_for(0), Some(file)).expect("runtime");
        let found = rt.discover().await.expect("discover");
        assert_eq!(found.len(), 2);
        let mut t = GuestTable::from_discovered(found);
        let s = t.apply_desired(&desired);
        // Not rebooted: the running one only has its disks read.
        assert!(s.ops.iter().all(|o| o.kind.name() == "devices" && o.instance_id == a), "{:?}", s.ops);
        let mut seen: Vec<(InstanceId, S, i64)> =
            s.reports.into_iter().map(|r| (r.instance_id, r.state, r.generation)).collect();
        seen.sort_by(|x, y| x.0.cmp(&y.0));
        let mut want = vec![(a, S::Running, 2), (b, S::Stopped, 1)];
        want.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(seen, want);
    }

    #[tokio::test(start_paused = true)]
    async fn steps_take_the_jittered_delay() {
        let config = SimConfig { delay: Duration::from_millis(300), fail_every: None, seed: 9 };
        let rt = SimRuntime::new(config, &profile_for(0), None).expect("runtime");
        let id = InstanceId::generate();
        for _ in 0..20 {
            let op = Op {
                instance_id: id.clone(),
                generation: 1,
                kind: OpKind::Prepare(Box::new(spec(&id, 1, P::Stopped, 0))),
            };
            let t0 = tokio::time::Instant::now();
            rt.execute(op).await.expect("prepare");
            let took = t0.elapsed();
            assert!(took >= Duration::from_millis(240) && took <= Duration::from_millis(361), "{took:?}");
        }
    }
}
