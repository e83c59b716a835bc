//! Finding guests again after an agent restart: each guest directory's record and
//! process, its QMP monitor reconnected (handshake and `query-status` again, since events
//! sent while no agent listened are not replayed), and what the guest is derived from
//! that. Never restarts a guest: running → running (watcher restarted); powered off or
//! panicked while the agent was away → stopped / failed (QEMU, kept by `-no-shutdown`,
//! is quit); process gone → failed; never booted → stopped.

use super::guest;
use super::qmp::Qmp;
use super::{Guest, GuestState, Inner, QMP_TIMEOUT, clear_leftovers, end_process, lock, pin_vcpus, process};
use crate::runtime::{Actual, Discovered, RuntimeError};
use plinth_api::InstanceId;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Inner {
    /// Finds the guest's QEMU again when this runtime does not hold it yet (after an agent
    /// restart): reconnects QMP and starts the watcher. Answers its run state, or `None`
    /// when no process of it lives.
    pub(super) async fn reattach(self: &Arc<Self>, g: &Guest, st: &mut GuestState) -> Result<Option<String>, String> {
        if let Some(l) = &st.live {
            if process::is_ours(l.pid, &g.paths.pidfile, l.started) && !l.qmp.is_closed() {
                let s = l.qmp.query_status().await.map_err(|e| e.to_string())?;
                return Ok(Some(s.status));
            }
            st.live = None;
        }
        let Some(r) = &st.record else { return Ok(None) };
        let pid = r.pid.or_else(|| process::read_pidfile(&g.paths.pidfile));
        let Some(pid) = pid.filter(|p| process::is_ours(*p, &g.paths.pidfile, r.pid_start)) else {
            return Ok(None);
        };
        let started = process::start_time(pid);
        let (qmp, events) = Qmp::connect(&g.paths.qmp_socket, QMP_TIMEOUT)
            .await
            .map_err(|e| format!("qemu (pid {pid}) runs but its monitor cannot be reached: {e}"))?;
        let qmp = Arc::new(qmp);
        let status = qmp.query_status().await.map_err(|e| e.to_string())?;
        let live = self.spawn_watcher(g, pid, started, qmp, events);
        st.live = Some(live);
        Ok(Some(status.status))
    }

    pub(super) async fn discover(self: &Arc<Self>) -> Result<Vec<Discovered>, RuntimeError> {
        let mut found = Vec::new();
        let mut dirs = match tokio::fs::read_dir(&self.root).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(RuntimeError::State { path: self.root.display().to_string(), reason: e.to_string() }),
        };
        while let Ok(Some(d)) = dirs.next_entry().await {
            let name = d.file_name().to_string_lossy().into_owned();
            let Some(id) = InstanceId::parse(&name) else {
                if d.path().is_dir() {
                    tracing::warn!(dir = %d.path().display(), "qemu: not a guest directory; left alone");
                }
                continue;
            };
            let g = self.guest(&id);
            let mut st = g.state.lock().await;
            if let Err(e) = self.load(&g, &mut st).await {
                tracing::error!("qemu: guest left alone: {e}");
                lock(&self.guests).remove(&id);
                continue;
            }
            let Some(disc) = self.rediscover(&g, &mut st).await else {
                drop(st);
                lock(&self.guests).remove(&id);
                continue;
            };
            self.publish(&g, &st);
            found.push(disc);
        }
        found.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(found)
    }

    /// What one guest on disk is; `None` when it is debris of a prepare that never
    /// finished (removed).
    async fn rediscover(self: &Arc<Self>, g: &Guest, st: &mut GuestState) -> Option<Discovered> {
        if st.record.is_none() {
            // A prepare that never wrote its record: nothing ever booted from this disk.
            if let Some(pid) = process::read_pidfile(&g.paths.pidfile) {
                let _ = process::kill(pid, &g.paths.pidfile, None).await;
            }
            tracing::warn!(dir = %g.paths.dir.display(), "qemu: removing an unfinished guest directory (no guest.json)");
            let _ = tokio::fs::remove_dir_all(&g.paths.dir).await;
            return None;
        }
        let outcome = match self.reattach(g, st).await {
            Ok(Some(status)) => match status.as_str() {
                "shutdown" => Some((Actual::Stopped, None, "powered off while the agent was away")),
                "guest-panicked" => {
                    Some((Actual::Failed, Some("guest panicked while the agent was away".to_string()), "panicked"))
                }
                "internal-error" | "io-error" => Some((
                    Actual::Failed,
                    Some(format!("qemu stopped the guest ({status}) while the agent was away")),
                    "error",
                )),
                _ => {
                    if status != "running" {
                        tracing::warn!(instance = %g.id, %status, "qemu: the guest's vCPUs are not running; left as is");
                    }
                    // Pinning is kept by the threads; apply it again in case it was changed.
                    if let (Some(l), Some(r)) = (&st.live, &st.record)
                        && !r.spec.claim.cpus.is_empty()
                        && let Err(e) = pin_vcpus(&l.qmp, &r.spec.claim.cpus).await
                    {
                        tracing::warn!(instance = %g.id, "qemu: re-pinning vCPUs: {e}");
                    }
                    if let (Some(l), Some(r)) = (&st.live, st.record.as_mut()) {
                        r.pid = Some(l.pid);
                        r.pid_start = l.started;
                        r.actual = Actual::Running;
                        r.detail = None;
                    }
                    None
                }
            },
            Ok(None) => {
                clear_leftovers(&g.paths).await;
                let r = st.record.as_mut()?;
                if r.actual == Actual::Running {
                    r.actual = Actual::Failed;
                    r.detail = Some("qemu exited while the agent was away".into());
                }
                r.pid = None;
                r.pid_start = None;
                None
            }
            Err(e) => {
                // Alive but unreachable: not known healthy, so failed; it is not killed
                // here (a later boot or destroy ends it).
                let r = st.record.as_mut()?;
                r.actual = Actual::Failed;
                r.detail = Some(e);
                None
            }
        };
        if let Some((actual, detail, what)) = outcome {
            tracing::info!(instance = %g.id, "qemu: the guest {what}; ending its process");
            if let Some(live) = st.live.take() {
                live.stopping.store(true, Ordering::SeqCst);
                if let Err(e) = end_process(Some(&live.qmp), live.pid, &g.paths.pidfile, live.started).await {
                    tracing::error!(instance = %g.id, "qemu: {e}");
                }
            }
            clear_leftovers(&g.paths).await;
            let r = st.record.as_mut()?;
            r.actual = actual;
            r.detail = detail;
            r.pid = None;
            r.pid_start = None;
        }
        let r = st.record.as_ref()?;
        if let Err(e) = guest::save(&g.paths.record, r).await {
            tracing::warn!(instance = %g.id, "qemu: {e}");
        }
        Some(Discovered {
            instance_id: g.id.clone(),
            generation: r.generation,
            actual: r.actual,
            booted_generation: r.booted_generation,
            detail: r.detail.clone(),
        })
    }
}
