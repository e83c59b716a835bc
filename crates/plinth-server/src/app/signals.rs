//! Wake-ups: a long-poll or a waiting saga step sleeps on a key (a host's desired state,
//! an instance's observation, an operation) until it is poked. Writers in this process poke
//! after they commit; the change feed ([`change_feed`]) pokes for every instance and
//! operation row that changed, whoever wrote it, so changes made by another replica wake
//! waiters here too. A poke is only a hint: every waiter re-reads the database, and also
//! wakes on a slow timer as a last resort.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest a waiter sleeps between checks when nobody pokes it (a safety net: the
/// change feed pokes within about a second of any change).
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// Notifiers by key.
#[derive(Default)]
pub struct Signals {
    map: Mutex<HashMap<String, Arc<Notify>>>,
    /// The row version (`updated_at`, µs) this process last woke each key's waiters for:
    /// the change feed does not wake them again for a version they were told of.
    announced: Mutex<HashMap<String, i64>>,
}

/// Above this many remembered announcements, those older than [`ANNOUNCED_KEEP_US`] are
/// forgotten (the change feed also forgets them once its window has passed).
const ANNOUNCED_MAX: usize = 100_000;
const ANNOUNCED_KEEP_US: i64 = 10_000_000;

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

    /// Wakes everyone waiting on `key` for version `at` (µs, the row's `updated_at`) of
    /// its row, which this process has just committed.
    pub fn announce(&self, key: &str, at: i64) {
        {
            let mut a = self.announced.lock().unwrap_or_else(|e| e.into_inner());
            if a.len() > ANNOUNCED_MAX {
                a.retain(|_, v| *v >= at - ANNOUNCED_KEEP_US);
            }
            a.insert(key.to_string(), at);
        }
        self.poke(key);
    }

    /// Whether this process already woke `key`'s waiters for version `at` of its row.
    fn announced(&self, key: &str, at: i64) -> bool {
        self.announced.lock().unwrap_or_else(|e| e.into_inner()).get(key) == Some(&at)
    }

    /// Forgets announcements of versions older than `before` (µs).
    fn forget_announced(&self, before: i64) {
        self.announced.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, v| *v >= before);
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

/// A change the web console's open tabs may show (sent by the change feed to
/// [`AppState::live`](crate::app::AppState::live)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    /// An instance's row changed.
    Instance { id: String, tenant_id: String },
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

/// Pokes the keys of every instance (and its host's desired state) and operation that
/// changed in the database, every `period`, whoever changed it. Reads trail by a short
/// window so rows committed late with an earlier timestamp are not missed; a key is poked
/// once per change.
pub async fn change_feed(st: crate::app::AppState, period: Duration) {
    const WINDOW: i64 = 2_000_000; // µs
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut high = plinth_store::now_micros();
    loop {
        tokio::time::sleep(period).await;
        let since = high - WINDOW;
        let (instances, ops) = match st.store.changes_since(since, 10_000).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("change feed: {e}");
                continue;
            }
        };
        for c in instances {
            high = high.max(c.at);
            // Most rows were seen on an earlier pass (the window is reread each time).
            if seen.get(&c.id) != Some(&c.at) {
                seen.insert(c.id.clone(), c.at);
                // A version written here was announced at commit: its waiters already know.
                let key = instance_key(&c.id);
                if !st.signals.announced(&key, c.at) {
                    st.signals.poke(&key);
                }
                if let Some(h) = &c.host_id {
                    st.signals.poke(&host_key(h));
                }
                // Web console tabs watching (none listening is not an error).
                let _ = st.live.send(Live::Instance { id: c.id, tenant_id: c.tenant_id });
            }
        }
        for (id, at) in ops {
            high = high.max(at);
            if seen.get(&id) != Some(&at) {
                seen.insert(id.clone(), at);
                st.signals.poke(&operation_key(&id));
            }
        }
        seen.retain(|_, at| *at >= high - 2 * WINDOW);
        st.signals.forget_announced(high - 2 * WINDOW);
    }
}
