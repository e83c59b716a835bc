//! The fleet in numbers, for the server's `/metrics`: instances by state and runtime
//! class, hosts by state, and when each host's agent last reported. Read from the database
//! at each scrape, so every replica reports the same truth and a restart loses nothing.

use crate::error::StoreError;
use crate::store::{Backend, Store};
use sqlx::Row;

/// What [`Store::fleet_counts`] reads.
#[derive(Clone, Debug, Default)]
pub struct FleetCounts {
    /// (state, runtime class, how many) of the instances not deleted.
    pub instances: Vec<(String, String, i64)>,
    /// (host id, state, last heartbeat or inventory report in microseconds, if any) of
    /// every host, in id order.
    pub hosts: Vec<(String, String, Option<i64>)>,
    /// Volume pools, by host id: (capacity, free) bytes as the host last reported them, and
    /// (provisioned, allocated) bytes of its volumes not yet wiped.
    pub pools: Vec<(String, PoolCounts)>,
}

/// One volume pool's figures, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub capacity: i64,
    pub free: i64,
    pub provisioned: i64,
    pub allocated: i64,
}

impl Store {
    /// Instance counts (one grouped query) and every host's state and last report.
    pub async fn fleet_counts(&self) -> Result<FleetCounts, StoreError> {
        // The runtime class lives only in documents: group by the shape first, then read it
        // from the few shapes (an instance's is its shape's, which never changes), so the
        // scrape reads two columns of each instance row and parses no instance document.
        let runtime = match self.backend {
            Backend::Sqlite => "json_extract(s.doc, '$.runtime_class')",
            Backend::Postgres => "(s.doc::json ->> 'runtime_class')",
        };
        let instances = format!(
            "SELECT g.state AS state, COALESCE({runtime}, '') AS runtime, CAST(SUM(g.n) AS BIGINT) AS n FROM \
             (SELECT state, shape_id, COUNT(*) AS n FROM instances WHERE lifecycle <> 'deleted' \
              GROUP BY state, shape_id) g \
             LEFT JOIN shapes s ON s.id = g.shape_id GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let instances = sqlx::query(sqlx::AssertSqlSafe(instances)).fetch_all(&self.read);
        let hosts = sqlx::query("SELECT id, state, heartbeat_at FROM hosts ORDER BY id").fetch_all(&self.read);
        let sqlite = self.backend == Backend::Sqlite;
        let pool = |f: &str| {
            if sqlite {
                format!("json_extract(doc, '$.inventory.volume_pool.{f}')")
            } else {
                format!("CAST(doc::json -> 'inventory' -> 'volume_pool' ->> '{f}' AS BIGINT)")
            }
        };
        let vol = |f: &str| {
            if sqlite {
                format!("COALESCE(json_extract(doc, '$.{f}'), 0)")
            } else {
                format!("COALESCE(CAST(doc::json ->> '{f}' AS BIGINT), 0)")
            }
        };
        let pools = format!(
            "SELECT id, CAST({} AS BIGINT) AS capacity, CAST({} AS BIGINT) AS free FROM hosts \
             WHERE {} IS NOT NULL ORDER BY id",
            pool("capacity_bytes"),
            pool("free_bytes"),
            pool("capacity_bytes")
        );
        let volumes = format!(
            "SELECT host_id, CAST(SUM({}) AS BIGINT) AS gib, CAST(SUM({}) AS BIGINT) AS allocated FROM volumes \
             WHERE state <> 'deleted' AND host_id IS NOT NULL GROUP BY host_id",
            vol("size_gib"),
            vol("allocated_bytes")
        );
        let pools = sqlx::query(sqlx::AssertSqlSafe(pools)).fetch_all(&self.read);
        let volumes = sqlx::query(sqlx::AssertSqlSafe(volumes)).fetch_all(&self.read);
        let (instances, hosts, pools, volumes) = tokio::try_join!(instances, hosts, pools, volumes)?;
        let mut held: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for r in &volumes {
            held.insert(r.try_get("host_id")?, (r.try_get::<i64, _>("gib")? << 30, r.try_get("allocated")?));
        }
        let mut out = FleetCounts::default();
        for r in &instances {
            out.instances.push((r.try_get("state")?, r.try_get("runtime")?, r.try_get("n")?));
        }
        for r in &hosts {
            out.hosts.push((r.try_get("id")?, r.try_get("state")?, r.try_get("heartbeat_at")?));
        }
        for r in &pools {
            let id: String = r.try_get("id")?;
            let (provisioned, allocated) = held.get(&id).copied().unwrap_or_default();
            let c = PoolCounts { capacity: r.try_get("capacity")?, free: r.try_get("free")?, provisioned, allocated };
            out.pools.push((id, c));
        }
        Ok(out)
    }
}
