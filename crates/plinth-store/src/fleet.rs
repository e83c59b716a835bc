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
        let (instances, hosts) = tokio::try_join!(instances, hosts)?;
        let mut out = FleetCounts::default();
        for r in &instances {
            out.instances.push((r.try_get("state")?, r.try_get("runtime")?, r.try_get("n")?));
        }
        for r in &hosts {
            out.hosts.push((r.try_get("id")?, r.try_get("state")?, r.try_get("heartbeat_at")?));
        }
        Ok(out)
    }
}
