//! In-process wake-ups: a long-poll or a waiting saga step sleeps on a key (a host's
//! desired state, an instance's observation, an operation) until a writer in this process
//! pokes it. Only a hint: every waiter re-reads the database and also wakes on a short
//! timer, so changes written by another replica are seen too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest a waiter sleeps between checks when nobody pokes it (a change written by
/// another replica is seen within this).
pub const MAX_POLL: Duration = Duration::from_secs(15);

/// Notifiers by key.
#[derive(Default)]
pub struct Signals {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Signals {
    fn get(&self, key: &str) -> Arc<Notify> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            // Waiters hold their own Arc; forgetting idle entries only costs a timer tick.
            m.retain(|_, n| Arc::strong_count(n) > 1);
        }
        m.entry(key.to_string()).or_default().clone()
    }

    /// Wakes everyone waiting on `key`.
    pub fn poke(&self, key: &str) {
        let n = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// Calls `check` until it yields a value or `deadline` passes (None), sleeping between
    /// calls until `key` is poked or the poll interval passes. The interval starts at
    /// `tick` and doubles after every unpoked wait up to [`MAX_POLL`], so thousands of
    /// idle waiters cost the database little; a poke resets it. The wake-up is armed
    /// before each check, so a poke that lands during the check is not missed.
    pub async fn wait_for<T, E, F, Fut>(
        &self,
        key: &str,
        deadline: tokio::time::Instant,
        tick: Duration,
        mut check: F,
    ) -> Result<Option<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, E>>,
    {
        let n = self.get(key);
        let mut interval = tick;
        loop {
            let notified = n.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = check().await? {
                return Ok(Some(v));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match tokio::time::timeout(interval.min(deadline - now), notified).await {
                Ok(()) => interval = tick,
                Err(_) => interval = (interval * 2).min(MAX_POLL.max(tick)),
            }
        }
    }

    /// Sleeps until `key` is poked or `max` passes, whichever is first.
    pub async fn wait(&self, key: &str, max: Duration) {
        let n = self.get(key);
        let _ = tokio::time::timeout(max, n.notified()).await;
    }
}

/// The key for a host's desired state.
pub fn host_key(host_id: &str) -> String {
    format!("host/{host_id}")
}

/// The key for an instance's observed state.
pub fn instance_key(instance_id: &str) -> String {
    format!("instance/{instance_id}")
}

/// The key for an operation's status.
pub fn operation_key(op_id: &str) -> String {
    format!("op/{op_id}")
}
