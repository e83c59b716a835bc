//! The data-plane side of tenant networks in the database: reading what a host must hold,
//! recording what its agent applied, and keeping NIC placement, host generations and
//! readiness barriers right when something changes.
//!
//! A change to a VPC ([`Tx::network_changed`]) bumps `hosts.desired_generation` of every
//! host of the VPC (the agent's one long-poll carries instances and networks alike) and
//! gives each newly placed NIC its barrier: the generation each of those hosts must apply
//! before the NIC is reachable from it. The CRUD of VPCs, subnets, NICs and groups is in
//! `network.rs`; what the rows mean is `plinth_domain::netspec`.

use crate::error::StoreError;
use crate::resource::{Resource, Val};
use crate::sql::{Sql, packed, unpack};
use crate::store::{Store, now_micros};
use crate::tx::Tx;
use plinth_api::*;
use plinth_domain::netspec::{NicProgress, NicRow, VpcRows};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

fn decode<T: serde::de::DeserializeOwned>(table: &'static str, doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|source| StoreError::Corrupt { table, source })
}

/// A packed listing of `table` that does not read as written (`what`: the part).
fn malformed(table: &'static str, what: &str) -> StoreError {
    StoreError::Corrupt { table, source: serde::de::Error::custom(format!("a packed listing: {what}")) }
}

fn opt_host(r: &AnyRow, col: &str) -> Result<Option<HostId>, StoreError> {
    Ok(r.try_get::<Option<String>, _>(col)?.map(HostId))
}

fn placeholders(sql: &mut Sql, ids: &[String]) -> String {
    let ps: Vec<String> = ids.iter().map(|i| sql.arg(Val::text(i.clone()))).collect();
    ps.join(", ")
}

/// Documents of an earlier read, by id, shared with it.
struct Kept<'a, T>(HashMap<&'a str, &'a Arc<T>>);

impl<'a, T: Resource> Kept<'a, T> {
    fn of(docs: impl Iterator<Item = &'a Arc<T>>) -> Self {
        Kept(docs.map(|d| (d.id(), d)).collect())
    }

    /// The ids of `listed` (id, generation) whose document is not kept at that generation.
    fn stale<'b>(&self, listed: impl Iterator<Item = (&'b str, i64)>) -> Vec<String> {
        listed
            .filter(|(id, g)| self.0.get(id).is_none_or(|d| d.generation() != *g))
            .map(|(id, _)| id.to_owned())
            .collect()
    }

    /// The document of `id` at `generation`: read now (taken from `fresh`), or kept; `None`
    /// when it was gone by the time the documents were read.
    fn current(&self, id: &str, generation: i64, fresh: &mut HashMap<String, Arc<T>>) -> Option<Arc<T>> {
        fresh.remove(id).or_else(|| self.0.get(id).filter(|d| d.generation() == generation).map(|d| Arc::clone(d)))
    }
}

impl Store {
    /// The host's desired generation, the VPCs with a NIC on it with each one's data
    /// version (read before the rows, so rows read later are at least that new), and every
    /// host's underlay address. One statement (one snapshot, one hand-off to SQLite's
    /// thread: on a busy host each costs milliseconds of waiting).
    pub async fn host_network(
        &self,
        host_id: &str,
    ) -> Result<(i64, Vec<(String, i64)>, BTreeMap<HostId, String>), StoreError> {
        let sql = format!(
            "SELECT (SELECT desired_generation FROM hosts WHERE id = $1) AS generation, \
             (SELECT {} FROM vpcs WHERE id IN (SELECT DISTINCT vpc_id FROM nics WHERE host_id = $1)) AS vpcs, \
             (SELECT {} FROM host_networks WHERE vtep IS NOT NULL) AS vteps",
            packed(self.backend, &["id", "CAST(data_version AS TEXT)"]),
            packed(self.backend, &["host_id", "vtep"]),
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(host_id.to_string()).fetch_one(&self.read).await?;
        let generation: Option<i64> = row.try_get("generation")?;
        let (vpcs, vteps): (Option<String>, Option<String>) = (row.try_get("vpcs")?, row.try_get("vteps")?);
        let bad = |what: &str| malformed("vpcs/host_networks", what);
        let mut list = Vec::new();
        for f in unpack(vpcs.as_deref()) {
            let [id, version] = f[..] else { return Err(bad("field count")) };
            list.push((id.to_owned(), version.parse::<i64>().map_err(|_| bad("data_version"))?));
        }
        list.sort();
        let mut out = BTreeMap::new();
        for f in unpack(vteps.as_deref()) {
            let [host, vtep] = f[..] else { return Err(bad("field count")) };
            out.insert(HostId(host.to_owned()), vtep.to_owned());
        }
        Ok((generation.unwrap_or(0), list, out))
    }

    /// The rows of one VPC as its hosts' specs need them, with the data version they are
    /// at least as new as (`None`: no such VPC). A group's rules come with its document,
    /// which every rule change rewrites in the same transaction as the rule's row.
    ///
    /// `prior`: rows read before, whose NIC and group documents are reused where the row's
    /// generation did not move (every write of a document moves it). One statement reads
    /// the VPC, its subnets, and the NICs' columns and groups' generations, packed into one
    /// row (one snapshot; on SQLite each row and each statement is a hand-off between
    /// threads, milliseconds each on a busy host); one per table reads the documents that
    /// are new or changed. At 2,000 NICs reading and decoding every NIC document was 25–50 ms
    /// of each change's host specs (bench/net), and a group of 10,000 rules as much again.
    pub async fn vpc_rows(&self, vpc_id: &str, prior: Option<&VpcRows>) -> Result<Option<(i64, VpcRows)>, StoreError> {
        let b = self.backend;
        let sql = format!(
            "SELECT v.doc AS doc, v.firewall_generation AS firewall_generation, v.data_version AS data_version, \
             (SELECT {} FROM subnets s WHERE s.vpc_id = v.id) AS subnets, \
             (SELECT {} FROM nics n LEFT JOIN instances i ON i.id = n.instance_id WHERE n.vpc_id = v.id) AS nics, \
             (SELECT {} FROM security_groups g WHERE g.vpc_id = v.id) AS groups, \
             (SELECT {} FROM ip_pools p) AS pools \
             FROM vpcs v WHERE v.id = $1",
            packed(b, &["CAST(s.idx AS TEXT)", "s.doc"]),
            packed(
                b,
                &[
                    "n.id",
                    "CAST(n.generation AS TEXT)",
                    "CAST(n.port AS TEXT)",
                    "COALESCE(n.host_id, '')",
                    "COALESCE(i.name, '')"
                ]
            ),
            packed(b, &["g.id", "CAST(g.generation AS TEXT)", "CAST(g.filter_generation AS TEXT)"]),
            packed(b, &["CAST(p.first_addr AS TEXT)", "CAST(p.last_addr AS TEXT)", "COALESCE(p.gateway, '')"]),
        );
        let Some(row) =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(vpc_id.to_string()).fetch_optional(&self.read).await?
        else {
            return Ok(None);
        };
        let bad = |what: &str| malformed("vpcs", what);
        let vpc: Vpc = decode("vpcs", &row.try_get::<String, _>("doc")?)?;
        let firewall_generation: i64 = row.try_get("firewall_generation")?;
        let data_version: i64 = row.try_get("data_version")?;
        let (subnet_rows, nic_rows, group_rows): (Option<String>, Option<String>, Option<String>) =
            (row.try_get("subnets")?, row.try_get("nics")?, row.try_get("groups")?);
        let mut subnets = Vec::new();
        for f in unpack(subnet_rows.as_deref()) {
            let [idx, doc] = f[..] else { return Err(bad("subnet field count")) };
            subnets.push((decode::<Subnet>("subnets", doc)?, idx.parse::<u32>().map_err(|_| bad("subnet index"))?));
        }
        subnets.sort_by_key(|(_, idx)| *idx);
        // (id, generation, port, host, hostname) of every NIC, in port order.
        let mut listed = Vec::new();
        for f in unpack(nic_rows.as_deref()) {
            let [id, generation, port, host, hostname] = f[..] else { return Err(bad("NIC field count")) };
            let generation: i64 = generation.parse().map_err(|_| bad("NIC generation"))?;
            let port: u32 = port.parse().map_err(|_| bad("NIC port"))?;
            let text = |t: &str| Some(t.to_owned()).filter(|t| !t.is_empty());
            listed.push((id.to_owned(), generation, port, text(host).map(HostId), text(hostname)));
        }
        listed.sort_by_key(|(_, _, port, ..)| *port);
        let mut group_list = Vec::new();
        let mut group_filter_generations = BTreeMap::new();
        for f in unpack(group_rows.as_deref()) {
            let [id, generation, filter] = f[..] else { return Err(bad("group field count")) };
            group_list.push((id.to_owned(), generation.parse::<i64>().map_err(|_| bad("group generation"))?));
            group_filter_generations.insert(
                SecurityGroupId(id.to_owned()),
                filter.parse::<i64>().map_err(|_| bad("group filter generation"))?,
            );
        }
        group_list.sort();
        let mut pool_gateways = Vec::new();
        for f in unpack(row.try_get::<Option<String>, _>("pools")?.as_deref()) {
            let [first, last, gateway] = f[..] else { return Err(bad("pool field count")) };
            let n = |t: &str| t.parse::<u32>().map_err(|_| bad("pool range"));
            pool_gateways.push((n(first)?, n(last)?, Some(gateway.to_owned()).filter(|g| !g.is_empty())));
        }

        // Documents kept from the prior read are reused while their generation stays; the
        // others are read now. Read after the listing, one may be newer than listed (it is
        // used; its generation says so next time) or gone (it is left out of this read).
        let known_nics = Kept::of(prior.iter().flat_map(|p| p.nics.iter().map(|n| &n.nic)));
        let known_groups = Kept::of(prior.iter().flat_map(|p| p.groups.iter()));
        let mut fresh_nics: HashMap<String, Arc<NetworkInterface>> =
            self.documents(&known_nics.stale(listed.iter().map(|(id, g, ..)| (id.as_str(), *g)))).await?;
        let mut fresh_groups: HashMap<String, Arc<SecurityGroup>> =
            self.documents(&known_groups.stale(group_list.iter().map(|(id, g)| (id.as_str(), *g)))).await?;
        let nics = listed
            .into_iter()
            .filter_map(|(id, generation, port, host_id, hostname)| {
                let nic = known_nics.current(&id, generation, &mut fresh_nics)?;
                Some(NicRow { nic, port, host_id, hostname })
            })
            .collect();
        let groups =
            group_list.into_iter().filter_map(|(id, g)| known_groups.current(&id, g, &mut fresh_groups)).collect();
        Ok(Some((
            data_version,
            VpcRows { vpc, firewall_generation, group_filter_generations, subnets, nics, groups, pool_gateways },
        )))
    }

    /// The documents of `ids` in `T`'s table, decoded, by id (one statement per 500).
    async fn documents<T: Resource>(&self, ids: &[String]) -> Result<HashMap<String, Arc<T>>, StoreError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::new(format!("SELECT id, doc FROM {} WHERE 1=1", T::TABLE));
            let ps = placeholders(&mut sql, chunk);
            sql.push(&format!(" AND id IN ({ps})"));
            for r in sql.query().fetch_all(&self.read).await? {
                out.insert(r.try_get("id")?, Arc::new(decode(T::TABLE, &r.try_get::<String, _>("doc")?)?));
            }
        }
        Ok(out)
    }

    /// Records what a host's agent applied. Returns the instances whose NICs' readiness
    /// may have changed (those with a NIC in a VPC the host carries), to wake their waiters.
    pub async fn record_network_report(
        &self,
        host_id: &str,
        report: &ObservedNetwork,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin().await?;
        let old_vtep: Option<String> = {
            let mut sql = Sql::new("SELECT vtep FROM host_networks WHERE 1=1");
            sql.cond("host_id =", Val::text(host_id));
            tx.fetch(sql).await?.first().map(|r| r.try_get("vtep")).transpose()?.flatten()
        };
        let now = now_micros();
        let mut sql = Sql::new("INSERT INTO host_networks (host_id, applied_generation, vtep, reported_at) VALUES (");
        let a = sql.arg(Val::text(host_id));
        let b = sql.arg(Val::Int(Some(report.generation)));
        let c = sql.arg(Val::opt_text(report.vtep.clone()));
        let d = sql.arg(Val::Int(Some(now)));
        sql.push(&format!(
            "{a}, {b}, {c}, {d}) ON CONFLICT (host_id) DO UPDATE SET \
             applied_generation = CASE WHEN excluded.applied_generation > host_networks.applied_generation \
             THEN excluded.applied_generation ELSE host_networks.applied_generation END, \
             vtep = COALESCE(excluded.vtep, host_networks.vtep), reported_at = excluded.reported_at"
        ));
        tx.write_later(sql, "host_networks", "host network").await?;
        // NICs that read the same (after a change to a group's members: every NIC of the
        // VPC, all applied at the new generation) are written by one statement per chunk of
        // ids; a NIC whose report did not change is not written at all (`observed_at` is
        // when its observation last changed): a report after a rule change rewrites only
        // the group's members, not every NIC of the host.
        let mut alike: BTreeMap<(String, Option<i64>), Vec<String>> = BTreeMap::new();
        for n in &report.nics {
            let comps = serde_json::to_string(&n.components).unwrap_or_default();
            alike.entry((comps, n.filter_generation)).or_default().push(n.nic_id.as_str().to_owned());
        }
        for ((comps, generation), ids) in alike {
            for chunk in ids.chunks(500) {
                let mut sql = Sql::new("UPDATE nics SET observed_components = ");
                let a = sql.arg(Val::text(comps.clone()));
                let b = sql.arg(Val::Int(generation));
                let c = sql.arg(Val::Int(Some(now)));
                sql.push(&format!("{a}, observed_filter_generation = {b}, observed_at = {c} WHERE 1=1"));
                sql.cond("host_id =", Val::text(host_id));
                let list = placeholders(&mut sql, chunk);
                sql.push(&format!(" AND id IN ({list})"));
                let same_gen = match generation {
                    Some(_) => format!("observed_filter_generation = {b}"),
                    None => "observed_filter_generation IS NULL".to_owned(),
                };
                sql.push(&format!(
                    " AND NOT (COALESCE(observed_components = {a}, FALSE) AND COALESCE({same_gen}, FALSE))"
                ));
                tx.write_later(sql, "nics", "network interface").await?;
            }
        }
        if report.vtep.is_some() && report.vtep != old_vtep {
            // The host's NICs moved on the underlay: every host sharing a VPC with it must
            // learn the new address before they count as reachable again.
            let mut sql = Sql::new("UPDATE nics SET barrier = NULL WHERE 1=1");
            sql.cond("host_id =", Val::text(host_id));
            tx.write_later(sql, "nics", "network interface").await?;
            for v in tx.host_vpcs(host_id).await? {
                tx.network_changed(&v, &[]).await?;
            }
        }
        let mut sql = Sql::new(
            "SELECT DISTINCT instance_id FROM nics WHERE instance_id IS NOT NULL AND vpc_id IN \
             (SELECT vpc_id FROM nics WHERE 1=1",
        );
        sql.cond("host_id =", Val::text(host_id));
        sql.push(")");
        let rows = tx.fetch(sql).await?;
        let out = rows.iter().map(|r| r.try_get("instance_id")).collect::<Result<Vec<String>, _>>()?;
        tx.commit().await?;
        Ok(out)
    }

    /// The data-plane progress of NICs: of the given ids, or of one instance's NICs (in
    /// slot order). Each with its slot.
    pub async fn nic_progress(
        &self,
        nic_ids: &[String],
        instance_id: Option<&str>,
    ) -> Result<Vec<(NicId, Option<u8>, NicProgress)>, StoreError> {
        let mut sql = Sql::new(
            "SELECT id, vpc_id, host_id, slot, port, barrier, observed_components, observed_filter_generation, \
             (SELECT MAX(g.filter_generation) FROM nic_security_groups m JOIN security_groups g \
              ON g.id = m.security_group_id WHERE m.nic_id = nics.id) AS group_filter_generation \
             FROM nics WHERE 1=1",
        );
        match instance_id {
            Some(i) => {
                sql.cond("instance_id =", Val::text(i));
            }
            None => {
                if nic_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let ps = placeholders(&mut sql, nic_ids);
                sql.push(&format!(" AND id IN ({ps})"));
            }
        }
        sql.push(" ORDER BY slot, id");
        let rows = sql.query().fetch_all(&self.read).await?;
        let mut vpcs = BTreeSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let vpc: String = r.try_get("vpc_id")?;
            vpcs.insert(vpc.clone());
            let barrier: Option<String> = r.try_get("barrier")?;
            let comps: Option<String> = r.try_get("observed_components")?;
            let slot: Option<i64> = r.try_get("slot")?;
            let port: i64 = r.try_get("port")?;
            out.push((
                vpc,
                NicId(r.try_get("id")?),
                slot.map(|s| s as u8),
                NicProgress {
                    host_id: opt_host(r, "host_id")?,
                    components: comps.map(|c| decode("nics", &c)).transpose()?,
                    filter_generation_applied: r.try_get("observed_filter_generation")?,
                    filter_generation: r.try_get("group_filter_generation")?,
                    barrier: barrier.map(|b| decode("nics", &b)).transpose()?,
                    port: port as u32,
                    ..Default::default()
                },
            ));
        }
        if out.is_empty() {
            return Ok(Vec::new());
        }
        let vpcs: Vec<String> = vpcs.into_iter().collect();
        let mut sql = Sql::new("SELECT DISTINCT vpc_id, host_id FROM nics WHERE host_id IS NOT NULL");
        let ps = placeholders(&mut sql, &vpcs);
        sql.push(&format!(" AND vpc_id IN ({ps})"));
        let mut hosts: BTreeMap<String, BTreeSet<HostId>> = BTreeMap::new();
        for r in sql.query().fetch_all(&self.read).await? {
            hosts.entry(r.try_get("vpc_id")?).or_default().insert(HostId(r.try_get("host_id")?));
        }
        let mut applied = BTreeMap::new();
        for r in sqlx::query("SELECT host_id, applied_generation FROM host_networks").fetch_all(&self.read).await? {
            applied.insert(HostId(r.try_get("host_id")?), r.try_get::<i64, _>("applied_generation")?);
        }
        Ok(out
            .into_iter()
            .map(|(vpc, id, slot, mut p)| {
                p.vpc_hosts = hosts.get(&vpc).cloned().unwrap_or_default();
                p.applied = p
                    .barrier
                    .iter()
                    .flat_map(|b| b.keys())
                    .filter_map(|h| applied.get(h).map(|g| (h.clone(), *g)))
                    .collect();
                (id, slot, p)
            })
            .collect())
    }
}

impl Tx {
    /// The VPCs with a NIC on `host_id`.
    async fn host_vpcs(&mut self, host_id: &str) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new("SELECT DISTINCT vpc_id FROM nics WHERE 1=1");
        sql.cond("host_id =", Val::text(host_id));
        self.fetch(sql).await?.iter().map(|r| r.try_get("vpc_id").map_err(StoreError::from)).collect()
    }

    /// What hosts of a VPC must hold changed: bumps the VPC's data version (whatever its
    /// hosts' specs are built from changes only through here), the desired generation of
    /// every host with a NIC of the VPC and of `extra_hosts` (hosts a NIC just left), and gives every
    /// NIC placed since the last change its barrier. Returns the hosts it bumped; they are
    /// woken once the transaction commits (see [`Store::on_host_changed`]).
    pub async fn network_changed(&mut self, vpc_id: &str, extra_hosts: &[String]) -> Result<Vec<String>, StoreError> {
        self.network_changed_on(vpc_id, extra_hosts, None).await
    }

    /// [`Tx::network_changed`] for a change only some hosts of the VPC hold (a group's
    /// rules, held by its members' hosts): the others keep their desired generation, and
    /// are sent the change with whatever next moves them (it reaches none of their NICs).
    pub async fn network_changed_for(&mut self, vpc_id: &str, hosts: &[String]) -> Result<Vec<String>, StoreError> {
        let only: BTreeSet<String> = hosts.iter().cloned().collect();
        self.network_changed_on(vpc_id, &[], Some(&only)).await
    }

    async fn network_changed_on(
        &mut self,
        vpc_id: &str,
        extra_hosts: &[String],
        only: Option<&BTreeSet<String>>,
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new("SELECT DISTINCT host_id FROM nics WHERE host_id IS NOT NULL");
        sql.cond("vpc_id =", Val::text(vpc_id));
        let hosts: BTreeSet<String> =
            self.fetch(sql).await?.iter().map(|r| r.try_get("host_id")).collect::<Result<_, _>>()?;
        let all: BTreeSet<String> = hosts
            .iter()
            .filter(|h| only.is_none_or(|o| o.contains(*h)))
            .cloned()
            .chain(extra_hosts.iter().cloned())
            .collect();
        let mut sql = Sql::new("UPDATE vpcs SET data_version = data_version + 1 WHERE 1=1");
        sql.cond("id =", Val::text(vpc_id));
        self.write_later(sql, "vpcs", "VPC").await?;
        for h in &all {
            self.bump_desired(h).await?;
            if !self.wake.contains(h) {
                self.wake.push(h.clone());
            }
        }
        if !hosts.is_empty() {
            let ids: Vec<String> = hosts.iter().cloned().collect();
            let mut sql = Sql::new("SELECT id, desired_generation FROM hosts WHERE 1=1");
            let ps = placeholders(&mut sql, &ids);
            sql.push(&format!(" AND id IN ({ps})"));
            let mut barrier: BTreeMap<String, i64> = BTreeMap::new();
            for r in self.fetch(sql).await? {
                barrier.insert(r.try_get("id")?, r.try_get("desired_generation")?);
            }
            let mut sql = Sql::new("UPDATE nics SET barrier = ");
            let b = sql.arg(Val::text(serde_json::to_string(&barrier).unwrap_or_default()));
            sql.push(&format!("{b} WHERE host_id IS NOT NULL AND barrier IS NULL"));
            sql.cond("vpc_id =", Val::text(vpc_id));
            self.write_later(sql, "nics", "network interface").await?;
        }
        Ok(all.into_iter().collect())
    }

    /// Keeps an instance's NICs on the instance's host (`None`: on no host, e.g. deleted):
    /// NICs that move lose their barrier and their VPCs' hosts are told. Returns the hosts
    /// to wake.
    pub async fn sync_instance_nics(
        &mut self,
        instance_id: &str,
        host: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new("SELECT vpc_id, host_id FROM nics WHERE 1=1");
        sql.cond("instance_id =", Val::text(instance_id));
        let rows = self.fetch(sql).await?;
        let mut moved: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &rows {
            let old: Option<String> = r.try_get("host_id")?;
            if old.as_deref() != host {
                moved.entry(r.try_get("vpc_id")?).or_default().extend(old);
            }
        }
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new("UPDATE nics SET host_id = ");
        let h = sql.arg(Val::opt_text(host));
        sql.push(&format!(
            "{h}, barrier = NULL, observed_components = NULL, observed_filter_generation = NULL WHERE 1=1"
        ));
        sql.cond("instance_id =", Val::text(instance_id));
        self.write_later(sql, "nics", "network interface").await?;
        let mut wake = BTreeSet::new();
        for (vpc, old_hosts) in moved {
            wake.extend(self.network_changed(&vpc, &old_hosts).await?);
        }
        Ok(wake.into_iter().collect())
    }
}
