//! Shared server state handed to every handler.

use crate::metrics::Metrics;
use plinth_store::Store;
use std::sync::Arc;

/// What every handler can reach: the store and the metrics registry.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
}
