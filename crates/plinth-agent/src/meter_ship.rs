//! Ships the data path's egress byte counters to the server (`POST /agent/v1/counters`)
//! every period: each counter whose value moved since it was last accepted, as the
//! running total of its source (`<nic>/<class>/<epoch>`, see
//! [`crate::network::meter`]). The server turns totals into deltas; a restarted agent
//! sends the same totals again, which add nothing.

use crate::client::HostClient;
use crate::network::HostNetwork;
use chrono::Utc;
use plinth_api::{CounterSample, Meter};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Samples and ships every `period` until `stop` turns true.
pub async fn run(host: HostClient, net: Arc<dyn HostNetwork>, period: Duration, mut stop: watch::Receiver<bool>) {
    let mut accepted: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
        let n = net.clone();
        let Ok(readings) = tokio::task::spawn_blocking(move || n.counters()).await else { continue };
        let now = Utc::now();
        let samples: Vec<CounterSample> = readings
            .into_iter()
            .map(|r| (format!("{}/{}/{}", r.nic_id, r.class, r.epoch), r))
            .filter(|(source, r)| accepted.get(source) != Some(&r.bytes))
            .map(|(source, r)| CounterSample {
                source,
                seq: now.timestamp_micros(),
                meter: Meter::EgressBytes,
                instance_id: None,
                nic_id: Some(r.nic_id),
                dimension: Some(r.class.to_owned()),
                value: i64::try_from(r.bytes).unwrap_or(i64::MAX),
                at: now,
            })
            .collect();
        if samples.is_empty() {
            continue;
        }
        match host.counters(&samples).await {
            Ok(ack) => {
                tracing::debug!(
                    recorded = ack.recorded,
                    duplicate = ack.duplicate,
                    rejected = ack.rejected,
                    "counters shipped"
                );
                for s in samples {
                    accepted.insert(s.source, s.value as u64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "shipping egress counters failed; sent again next period"),
        }
    }
}
