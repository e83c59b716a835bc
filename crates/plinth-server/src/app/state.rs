//! Shared server state handed to every handler and background task.

use crate::app::reconcilers::Tasks;
use crate::app::scheduler::Scheduler;
use crate::app::signals::Signals;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use plinth_store::Store;
use std::sync::Arc;

/// How many live changes a slow web console tab may fall behind before it is told to
/// reload instead.
pub const LIVE_BACKLOG: usize = 4096;

/// What every handler can reach: the store, metrics, settings, the scheduler's cache,
/// in-process wake-ups and the background task registry.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServerConfig>,
    pub sched: Arc<Scheduler>,
    pub signals: Arc<Signals>,
    pub tasks: Arc<Tasks>,
    /// This process's name in leases (`srv_<ulid>`).
    pub owner: Arc<str>,
    /// VPC rows kept decoded between hosts' polls.
    pub vpc_rows: Arc<crate::app::dataplane::VpcRowsCache>,
    /// Changes for the web console's live pages, from the change feed.
    pub live: tokio::sync::broadcast::Sender<crate::app::signals::Live>,
}

impl AppState {
    /// State over `store` with `config`.
    pub fn new(store: Store, config: ServerConfig) -> AppState {
        let config = config.settle();
        let metrics = Arc::new(Metrics::default());
        let signals = Arc::new(Signals::default());
        // A transaction that changed a host's network wakes that host's long-poll when it
        // commits (one store per server; a second AppState over a clone keeps the first).
        let wake = signals.clone();
        store.on_host_changed(move |h| wake.poke(&crate::app::signals::host_key(h)));
        AppState {
            store: store.with_billing_anchor(config.billing_anchor_day),
            sched: Arc::new(Scheduler::new(&config, metrics.clone())),
            metrics,
            config: Arc::new(config),
            signals,
            tasks: Arc::new(Tasks::default()),
            owner: plinth_api::new_id("srv").into(),
            vpc_rows: Arc::default(),
            // A tab that falls this far behind is told to reload its rows.
            live: tokio::sync::broadcast::channel(LIVE_BACKLOG).0,
        }
    }
}
