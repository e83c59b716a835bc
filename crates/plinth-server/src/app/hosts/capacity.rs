//! Operator views of placement: the capacity summary (per site and rack, how many more of
//! each shape fit now) and a host's allocations (what it holds, for whom, down to pinned
//! CPUs, hugepages and GPUs).

use crate::app::scheduler::view_of;
use crate::app::{AppState, Caller, Paging, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::placement::{Request, count_fits};
use std::collections::{BTreeMap, HashMap};

/// How many more of each shape fit, per site and rack (shared hosts, no group rules).
pub async fn summary(st: &AppState, caller: &Caller) -> Result<CapacitySummary> {
    caller.require_operator("reading capacity")?;
    let (hosts, allocs) = st.store.scheduler_snapshot().await?;
    let mut by_host: HashMap<&str, Vec<Allocation>> = HashMap::new();
    for a in &allocs {
        by_host.entry(a.host_id.as_str()).or_default().push(a.clone());
    }
    let views: Vec<_> =
        hosts.iter().map(|h| view_of(h, by_host.get(h.id.as_str()).map(Vec::as_slice).unwrap_or(&[]), None)).collect();
    let shapes: Vec<Shape> = st.store.list_all(&Scope::Platform, &[]).await?;
    let mut rows = Vec::new();
    let mut totals = BTreeMap::new();
    for shape in &shapes {
        let req = Request::for_shape(shape, "");
        let mut per: BTreeMap<(Option<SiteId>, Option<RackId>), (u32, u64)> = BTreeMap::new();
        for (h, v) in hosts.iter().zip(&views) {
            let n = count_fits(&req, v) as u64;
            let e = per.entry((h.site_id.clone(), h.rack_id.clone())).or_default();
            if n > 0 {
                e.0 += 1;
            }
            e.1 += n;
        }
        let mut total = 0;
        for ((site_id, rack_id), (hosts, fits)) in per {
            total += fits;
            rows.push(CapacityRow {
                shape_id: shape.id.clone(),
                shape_name: shape.name.clone(),
                site_id,
                rack_id,
                hosts,
                fits,
            });
        }
        totals.insert(shape.name.clone(), total);
    }
    Ok(CapacitySummary { rows, totals })
}

/// What a host holds.
pub async fn host_allocations(st: &AppState, caller: &Caller, id: &str, p: &PageParams) -> Result<Page<Allocation>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(p)?;
    let _: Host = st.store.get(&Scope::Platform, id).await?;
    Ok(st
        .store
        .list::<Allocation>(&Scope::Platform, &[("host_id", id.to_string())], pg.limit, pg.cursor.as_deref())
        .await?)
}
