//! The watcher: one task per running guest, holding its QMP connection, that turns
//! what the guest does unasked into [`GuestEvent`]s and keeps its console log bounded.
//!
//! - `SHUTDOWN` from the guest (QEMU stays alive thanks to `-no-shutdown`) → QEMU is
//!   quit, [`Happened::PoweredOff`]; `SHUTDOWN` for a panic, or `GUEST_PANICKED` →
//!   quit, `Crashed("guest panicked")`; `SHUTDOWN` from the host (a signal) → `Crashed`;
//! - `RESET` from the guest → [`Happened::Reset`] (the runtime's own `system_reset` is not
//!   reported); `STOP`/`RESUME` → logged;
//! - the monitor closing while no step asked → `Crashed("qemu exited unexpectedly …")`.
//!
//! While a step ends the guest (`stopping`), nothing is reported: the step's result says
//! it. A watcher acts only on the run it was started for (its epoch), so a late event of
//! an old process cannot touch a new one.

use super::qmp::{EventStream, Qmp};
use super::{Guest, Inner, Live, clear_leftovers, console, end_process, guest, lock, process};
use crate::runtime::{Actual, GuestEvent, Happened};
use plinth_api::InstanceId;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

impl Inner {
    pub(super) fn spawn_watcher(
        self: &Arc<Self>,
        g: &Guest,
        pid: u32,
        started: Option<u64>,
        qmp: Arc<Qmp>,
        events: EventStream,
    ) -> Live {
        let epoch = self.next_epoch();
        let stopping = Arc::new(AtomicBool::new(false));
        let w = Watcher {
            inner: Arc::downgrade(self),
            id: g.id.clone(),
            epoch,
            qmp: qmp.clone(),
            stopping: stopping.clone(),
            console: g.paths.console_log.clone(),
            cap: self.cfg.console_cap,
            every: self.cfg.console_check_every,
        };
        let task = tokio::spawn(w.run(events));
        Live { epoch, pid, started, qmp, stopping, watcher: Some(task.abort_handle()) }
    }
}

/// What ended a watcher.
enum Outcome {
    /// The guest shut down or panicked; QEMU (kept alive by `-no-shutdown`) must be quit.
    Ended(Happened),
    /// The QMP connection closed while no step asked.
    Lost,
}

/// One running guest's watcher task.
struct Watcher {
    inner: Weak<Inner>,
    id: InstanceId,
    epoch: u64,
    qmp: Arc<Qmp>,
    stopping: Arc<AtomicBool>,
    console: PathBuf,
    cap: u64,
    every: Duration,
}

impl Watcher {
    async fn run(self, mut events: EventStream) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else {
                        if self.stopping.load(Ordering::SeqCst) { return; }
                        break Outcome::Lost;
                    };
                    if self.stopping.load(Ordering::SeqCst) {
                        continue;
                    }
                    match ev.name.as_str() {
                        "SHUTDOWN" => {
                            let reason = ev.reason().unwrap_or("unknown").to_string();
                            tracing::info!(instance = %self.id, %reason, guest = ?ev.guest(), "qemu: guest shut down");
                            break Outcome::Ended(if reason == "guest-panic" {
                                Happened::Crashed("guest panicked".into())
                            } else if ev.guest() == Some(true) {
                                Happened::PoweredOff
                            } else {
                                Happened::Crashed(format!("qemu was shut down on the host ({reason})"))
                            });
                        }
                        "GUEST_PANICKED" => break Outcome::Ended(Happened::Crashed("guest panicked".into())),
                        "RESET" => {
                            if ev.guest() == Some(true) {
                                self.send(Happened::Reset);
                            } else {
                                tracing::debug!(instance = %self.id, reason = ?ev.reason(), "qemu: reset by the host");
                            }
                        }
                        "DEVICE_DELETED" => {
                            if let (Some(n), Some(inner)) = (super::hotplug::deleted_slot(&ev.data), self.inner.upgrade()) {
                                let g = lock(&inner.guests).get(&self.id).cloned();
                                if let Some(g) = g {
                                    tokio::spawn(async move { inner.released(&g, n).await });
                                }
                            }
                        }
                        "STOP" => tracing::info!(instance = %self.id, "qemu: the guest's vCPUs stopped"),
                        "RESUME" => tracing::info!(instance = %self.id, "qemu: the guest's vCPUs resumed"),
                        other => tracing::debug!(instance = %self.id, event = other, "qemu: event"),
                    }
                }
                _ = tick.tick() => {
                    let (log, cap) = (self.console.clone(), self.cap);
                    match tokio::task::spawn_blocking(move || console::rotate_if_over(&log, cap)).await {
                        Ok(Ok(true)) => tracing::debug!(instance = %self.id, "qemu: console log rotated"),
                        Ok(Ok(false)) => {}
                        Ok(Err(e)) => tracing::warn!(instance = %self.id, "qemu: rotating the console log: {e}"),
                        Err(e) => tracing::warn!(instance = %self.id, "qemu: rotating the console log: {e}"),
                    }
                }
            }
        };
        self.finish(outcome).await;
    }

    fn send(&self, happened: Happened) {
        if let Some(inner) = self.inner.upgrade() {
            let _ = inner.events.send(GuestEvent { instance_id: self.id.clone(), happened });
        }
    }

    async fn finish(self, outcome: Outcome) {
        let Some(inner) = self.inner.upgrade() else { return };
        let Some(g) = lock(&inner.guests).get(&self.id).cloned() else { return };
        let mut st = g.state.lock().await;
        if st.live.as_ref().map(|l| l.epoch) != Some(self.epoch) || self.stopping.load(Ordering::SeqCst) {
            return; // a step has dealt with this run
        }
        let Some(mut live) = st.live.take() else { return };
        live.watcher = None; // this task: it must not abort itself
        live.stopping.store(true, Ordering::SeqCst);
        let paths = &g.paths;
        let happened = match outcome {
            Outcome::Ended(h) => {
                if let Err(e) = end_process(Some(&self.qmp), live.pid, &paths.pidfile, live.started).await {
                    tracing::error!(instance = %self.id, "qemu: {e}");
                }
                h
            }
            Outcome::Lost => {
                let gone = process::wait_gone(live.pid, &paths.pidfile, live.started, Duration::from_secs(2)).await;
                if !gone {
                    tracing::error!(instance = %self.id, pid = live.pid, "qemu: its monitor closed but the process lives; killing it");
                    let _ = process::kill(live.pid, &paths.pidfile, live.started).await;
                }
                Happened::Crashed(format!("qemu exited unexpectedly (pid {}; its monitor connection closed)", live.pid))
            }
        };
        clear_leftovers(paths).await;
        if let Some(r) = st.record.as_mut() {
            match &happened {
                Happened::PoweredOff => {
                    r.actual = Actual::Stopped;
                    r.detail = None;
                }
                Happened::Crashed(d) => {
                    r.actual = Actual::Failed;
                    r.detail = Some(d.clone());
                }
                Happened::Reset | Happened::Plugs(_) => {}
            }
            r.pid = None;
            r.pid_start = None;
            if let Err(e) = guest::save(&paths.record, r).await {
                tracing::warn!(instance = %self.id, "qemu: {e}");
            }
        }
        inner.publish(&g, &st);
        drop(st);
        tracing::info!(instance = %self.id, ?happened, "qemu: unasked guest change");
        let _ = inner.events.send(GuestEvent { instance_id: self.id.clone(), happened });
    }
}
