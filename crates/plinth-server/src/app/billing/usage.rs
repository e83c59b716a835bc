//! Usage: the ledger as tenants and operators read it, and the counter samples agents
//! report (deduplicated by source and sequence number).

use crate::app::lifecycle;
use crate::app::{AppState, Caller, Error, Paging, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::metering::{self, micros};
use plinth_store::{CounterReading, LedgerOwner, UsageFilter};

/// Whose usage a counter sample is.
enum Owner {
    Instance(Box<Instance>),
    Nic(Box<NetworkInterface>),
}

impl Owner {
    fn tenant(&self) -> &TenantId {
        match self {
            Owner::Instance(i) => &i.tenant_id,
            Owner::Nic(n) => &n.tenant_id,
        }
    }
}
use serde_json::json;

/// List usage records (tenants see their own; operators all).
pub async fn list(st: &AppState, caller: &Caller, q: UsageQuery) -> Result<Page<UsageRecord>> {
    let pg = Paging::from(&PageParams { limit: q.limit, cursor: q.cursor.clone() })?;
    let meter = match q.meter.as_deref() {
        None => None,
        Some(m) => Some(Meter::parse(m).ok_or_else(|| {
            Error::invalid("invalid_value", format!("meter {m:?} is not one of the meters"))
                .with_constraint(json!({ "field": "meter", "rule": "one-of",
                    "allowed": Meter::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>() }))
        })?),
    };
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f >= t
    {
        return Err(Error::invalid("invalid_value", "from must be before to")
            .with_constraint(json!({ "field": "from", "rule": "< to" })));
    }
    let f = UsageFilter {
        tenant_id: q.tenant_id,
        project_id: q.project_id,
        resource_id: q.resource_id,
        meter,
        from: q.from.map(micros),
        to: q.to.map(micros),
    };
    Ok(st.store.usage_page(&caller.scope(), &f, pg.limit, pg.cursor.as_deref()).await?)
}

/// Samples recorded per transaction: a host's report of a thousand NICs' counters in one
/// transaction held SQLite's writer for about 100 ms, and every API call meanwhile waited
/// for it (bench/net); in chunks, a waiting call waits for one chunk at most.
const COUNTER_CHUNK: usize = 100;

/// Report counter samples (agents), each of an instance or a NIC on the reporting host. A
/// repeated (source, sequence) is ignored; a counter lower than its last value was reset
/// and counts from zero. A sample for a period whose
/// invoice is already finalized is billed in the current period. Recorded in order, a
/// transaction per [`COUNTER_CHUNK`] samples: a report that fails part way is sent again
/// whole, and what was recorded of it counts as duplicate then.
pub async fn counters(st: &AppState, host_id: &HostId, samples: Vec<CounterSample>) -> Result<CounterAck> {
    if samples.len() > 10_000 {
        return Err(Error::invalid("too_many", "at most 10000 samples per report")
            .with_constraint(json!({ "rule": "max-items", "max": 10_000 })));
    }
    let mut ack = CounterAck { recorded: 0, duplicate: 0, rejected: 0 };
    for chunk in samples.chunks(COUNTER_CHUNK) {
        let part = record_counters(st, host_id, chunk).await?;
        ack.recorded += part.recorded;
        ack.duplicate += part.duplicate;
        ack.rejected += part.rejected;
    }
    Ok(ack)
}

/// Records `samples` in one transaction.
async fn record_counters(st: &AppState, host_id: &HostId, samples: &[CounterSample]) -> Result<CounterAck> {
    let mut tx = st.store.begin().await?;
    let (mut recorded, mut duplicate, mut rejected) = (0, 0, 0);
    for s in samples {
        let dimension = s.dimension.as_deref().unwrap_or("default");
        let bad_dimension = dimension.is_empty() || dimension.len() > 64;
        if s.meter.is_interval()
            || s.value < 0
            || s.seq < 0
            || s.source.is_empty()
            || s.source.len() > 256
            || bad_dimension
        {
            rejected += 1;
            continue;
        }
        // Whose usage: an instance or a NIC this host carries now.
        let owned = match (&s.instance_id, &s.nic_id) {
            (Some(i), None) => match tx.find::<Instance>(&Scope::Platform, i.as_str()).await? {
                Some(i) if i.host_id.as_ref() == Some(host_id) => Some(Owner::Instance(Box::new(i))),
                _ => None,
            },
            (None, Some(n)) => match tx.find::<NetworkInterface>(&Scope::Platform, n.as_str()).await? {
                Some(nic) if tx.nic_host(nic.id.as_str()).await?.as_deref() == Some(host_id.as_str()) => {
                    Some(Owner::Nic(Box::new(nic)))
                }
                _ => None,
            },
            _ => None,
        };
        let Some(owned) = owned else {
            rejected += 1;
            continue;
        };
        // Sources are this host's own: another host cannot write into them.
        let source = format!("{}/{}", host_id, s.source);
        let at = metering::truncate(s.at);
        let mut period = metering::period_of(at, tx.billing_anchor());
        // Late for a period whose invoice is final: billed on the current period's invoice.
        if let Some(inv) = tx.live_invoice(owned.tenant().as_str(), micros(period.start)).await?
            && inv.status != InvoiceStatus::Draft
        {
            period = metering::period_of(tx.now(), tx.billing_anchor());
        }
        let reading = CounterReading {
            source: &source,
            seq: s.seq,
            meter: s.meter,
            dimension,
            value: s.value,
            at: micros(at),
            period_start: micros(period.start),
        };
        let new = match &owned {
            Owner::Instance(i) => tx.record_counter(&lifecycle::owner(i), &reading).await?,
            Owner::Nic(n) => {
                let owner = LedgerOwner {
                    tenant_id: n.tenant_id.as_str(),
                    project_id: n.project_id.as_str(),
                    resource_id: n.id.as_str(),
                    resource_kind: "network_interface",
                };
                tx.record_counter(&owner, &reading).await?
            }
        };
        if new { recorded += 1 } else { duplicate += 1 }
    }
    tx.commit().await?;
    Ok(CounterAck { recorded, duplicate, rejected })
}
