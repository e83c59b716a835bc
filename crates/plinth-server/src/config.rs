//! Server settings: timers of the agent protocol and the background tasks, the placement
//! policy, where image blobs live, and fail points for tests. Read from `PLINTH_*`
//! environment variables.

use plinth_domain::placement::Weigh;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// Default largest image file (16 GiB).
pub const DEFAULT_IMAGE_MAX_BYTES: u64 = 16 << 30;

/// Tunables of one server process.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How often agents heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which a host is `unreachable`.
    pub heartbeat_window: Duration,
    /// How long a saga's lease lasts without renewal (a dead server's sagas are taken
    /// over after this).
    pub lease_ttl: Duration,
    /// How long a saga step waits for a host to act.
    pub step_timeout: Duration,
    /// How long a start waits for the instance's NICs to be `ready` before it fails
    /// naming the components still missing.
    pub nic_ready_timeout: Duration,
    /// The MTU of the hosts' underlay; a subnet made now gets this less the VXLAN
    /// overhead (1450 on 1500, 8950 on jumbo frames of 9000).
    pub underlay_mtu: u32,
    /// Placement weighing: `pack` or `spread`.
    pub weigh: Weigh,
    /// Choose randomly among the best N hosts (1: deterministic).
    pub randomize_top: u32,
    /// Period of the reconcilers.
    pub reconcile_period: Duration,
    /// `kind:step` names (`instance.create:prepare`) whose step fails on purpose, or
    /// `kind:step:undo` (`instance.create:claim:undo`) whose undo does (tests).
    pub failpoints: BTreeSet<String>,
    /// Where image files are kept (`{blob_dir}/sha256/<hex>`). Replicas must share it.
    /// None: the image endpoints answer `503 images_unavailable`.
    pub blob_dir: Option<PathBuf>,
    /// Largest image file accepted, in bytes.
    pub image_max_bytes: u64,
    /// Day of the month (1–28) billing periods start on, 00:00 UTC.
    pub billing_anchor_day: u32,
    /// How long after a period ends its draft invoices still take late counters; the
    /// invoice reconciler finalizes them after it.
    pub invoice_grace: Duration,
    /// `POST /v1/system/clock` may move the lifecycle and metering clock on (tests and
    /// demos only).
    pub test_clock: bool,
    /// The SHA-256 of the CA of the certificate this server presents (HTTPS), carried by
    /// the join tokens it makes so agents pin it. None: served over plain HTTP.
    pub ca_sha256: Option<plinth_client::connect::Fingerprint>,
    /// The key sealing volume keys (`volume.kek` beside the database or the blob
    /// directory, or `PLINTH_VOLUME_KEK_FILE`). None: encrypted volumes cannot be made
    /// (`503 volume_keys_unavailable`).
    pub volume_kek: Option<crate::secrets::VolumeKek>,
    /// How many times its capacity a host's volume pool may promise (volumes are sparse
    /// files: thin provisioning). 1.0, the default, never promises more than it holds.
    pub volume_oversubscription: f64,
    /// How long a running guest has to release a detached volume's disk before the
    /// attachment is `error_detaching` (default 160 s, as Nova waits).
    pub detach_timeout: Duration,
    /// The Ceph pool `rbd` volume types use (`PLINTH_RBD_*`). None: no `rbd` types.
    pub rbd: Option<crate::app::storage::driver::RbdConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_window: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(10),
            step_timeout: Duration::from_secs(120),
            nic_ready_timeout: Duration::from_secs(60),
            underlay_mtu: plinth_domain::network::DEFAULT_UNDERLAY_MTU,
            weigh: Weigh::Pack,
            randomize_top: 1,
            reconcile_period: Duration::from_secs(5),
            failpoints: BTreeSet::new(),
            blob_dir: None,
            image_max_bytes: DEFAULT_IMAGE_MAX_BYTES,
            billing_anchor_day: 1,
            invoice_grace: Duration::from_secs(3 * 86_400),
            test_clock: false,
            ca_sha256: None,
            volume_kek: None,
            volume_oversubscription: 1.0,
            detach_timeout: Duration::from_secs(160),
            rbd: None,
        }
    }
}

fn secs(var: &str) -> Option<Duration> {
    let v = std::env::var(var).ok()?;
    let f: f64 = v.trim().parse().ok()?;
    (f.is_finite() && f > 0.0).then(|| Duration::from_secs_f64(f))
}

impl ServerConfig {
    /// Defaults overridden by `PLINTH_HEARTBEAT_INTERVAL_S`, `PLINTH_HEARTBEAT_WINDOW_S`,
    /// `PLINTH_LEASE_TTL_S`, `PLINTH_STEP_TIMEOUT_S`, `PLINTH_NIC_READY_TIMEOUT_S`, `PLINTH_RECONCILE_PERIOD_S`,
    /// `PLINTH_UNDERLAY_MTU` (1280–9216),
    /// `PLINTH_PLACEMENT_WEIGH` (`pack`|`spread`), `PLINTH_PLACEMENT_RANDOMIZE_TOP`,
    /// `PLINTH_BLOB_DIR`, `PLINTH_IMAGE_MAX_BYTES`, `PLINTH_BILLING_ANCHOR_DAY` (1–28),
    /// `PLINTH_INVOICE_GRACE_S`, `PLINTH_VOLUME_OVERSUBSCRIPTION` (1–100), `PLINTH_DETACH_TIMEOUT_S`,
    /// `PLINTH_RBD_POOL`, `PLINTH_RBD_USER`, `PLINTH_RBD_MONITORS`, `PLINTH_RBD_COMMAND`,
    /// `PLINTH_TEST_CLOCK` (`1`) and `PLINTH_FAILPOINTS`
    /// (comma-separated `kind:step` or `kind:step:undo`).
    pub fn from_env() -> ServerConfig {
        let mut c = ServerConfig::default();
        if let Some(d) = secs("PLINTH_HEARTBEAT_INTERVAL_S") {
            c.heartbeat_interval = d;
        }
        if let Some(d) = secs("PLINTH_HEARTBEAT_WINDOW_S") {
            c.heartbeat_window = d;
        }
        if let Some(d) = secs("PLINTH_LEASE_TTL_S") {
            c.lease_ttl = d;
        }
        if let Some(d) = secs("PLINTH_STEP_TIMEOUT_S") {
            c.step_timeout = d;
        }
        if let Some(d) = secs("PLINTH_NIC_READY_TIMEOUT_S") {
            c.nic_ready_timeout = d;
        }
        if let Some(m) = std::env::var("PLINTH_UNDERLAY_MTU").ok().and_then(|v| v.trim().parse::<u32>().ok()) {
            c.underlay_mtu = m.clamp(1280, 9216);
        }
        if let Some(d) = secs("PLINTH_DETACH_TIMEOUT_S") {
            c.detach_timeout = d;
        }
        if let Some(d) = secs("PLINTH_RECONCILE_PERIOD_S") {
            c.reconcile_period = d;
        }
        if let Ok(w) = std::env::var("PLINTH_PLACEMENT_WEIGH") {
            c.weigh = if w.trim() == "spread" { Weigh::Spread } else { Weigh::Pack };
        }
        if let Some(n) = std::env::var("PLINTH_PLACEMENT_RANDOMIZE_TOP").ok().and_then(|v| v.trim().parse().ok()) {
            c.randomize_top = n;
        }
        if let Some(d) = std::env::var_os("PLINTH_BLOB_DIR").filter(|d| !d.is_empty()) {
            c.blob_dir = Some(PathBuf::from(d));
        }
        if let Some(n) = std::env::var("PLINTH_IMAGE_MAX_BYTES").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            c.image_max_bytes = n.max(1);
        }
        if let Some(d) = std::env::var("PLINTH_BILLING_ANCHOR_DAY").ok().and_then(|v| v.trim().parse::<u32>().ok()) {
            c.billing_anchor_day = d.clamp(1, 28);
        }
        if let Some(d) = secs("PLINTH_INVOICE_GRACE_S") {
            c.invoice_grace = d;
        }
        if let Some(r) = std::env::var("PLINTH_VOLUME_OVERSUBSCRIPTION").ok().and_then(|v| v.trim().parse::<f64>().ok())
            && r.is_finite()
        {
            c.volume_oversubscription = r.clamp(1.0, 100.0);
        }
        c.rbd = crate::app::storage::driver::RbdConfig::from_env();
        c.test_clock = std::env::var("PLINTH_TEST_CLOCK").is_ok_and(|v| v.trim() == "1");
        if let Ok(f) = std::env::var("PLINTH_FAILPOINTS") {
            c.failpoints = f.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        c.settle()
    }

    /// Keeps the timers coherent: agents beat at least three times per heartbeat window,
    /// so one late beat never marks a healthy host unreachable.
    pub fn settle(mut self) -> ServerConfig {
        if self.heartbeat_interval * 3 > self.heartbeat_window {
            self.heartbeat_interval = (self.heartbeat_window / 3).max(Duration::from_millis(100));
        }
        self
    }
}
