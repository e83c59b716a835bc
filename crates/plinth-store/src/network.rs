//! Tenant networking rows: VPCs, subnets, security groups and their rules, NICs and their
//! group memberships, the platform-wide VNI space, and the operators' IP pools. The facts
//! behind allocation (which addresses, ports, MACs, VNIs and subnet indexes are taken, and
//! which public ranges pools hold) are read here; what to allocate is
//! `plinth_domain::network`'s and the server's decision. Uniqueness is the schema's (one
//! address per subnet, one MAC and port per VPC, one VNI platform-wide).
//!
//! Allocation is race-free without retries: a NIC's transaction first reads its VPC
//! through [`Tx::get`] (`FOR UPDATE` on PostgreSQL; SQLite's writer is already one at a
//! time), so NIC creates in one VPC run one after another and each sees what the one
//! before it took; pool creates take [`Tx::lock_ip_pools`].

use crate::error::StoreError;
use crate::resource::{Resource, Val, meta};
use crate::sql::Sql;
use crate::store::Store;
use crate::tx::Tx;
use chrono::{DateTime, Utc};
use plinth_api::*;
use sqlx::Row;

impl Resource for Vpc {
    const TABLE: &'static str = "vpcs";
    const KIND: &'static str = "vpc";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "name"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("name", Val::text(&self.name)),
            ("vni", Val::Int(Some(self.vni as i64))),
            ("is_default", Val::Int(self.is_default.then_some(1))),
        ]
    }
}

impl Resource for Subnet {
    const TABLE: &'static str = "subnets";
    const KIND: &'static str = "subnet";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "vpc_id", "name"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("vpc_id", Val::text(&self.vpc_id.0)),
            ("name", Val::text(&self.name)),
            ("vni", Val::Int(Some(self.vni as i64))),
        ]
    }
}

impl Resource for IpPool {
    const TABLE: &'static str = "ip_pools";
    const KIND: &'static str = "IP pool";
    const TENANT_COL: Option<&'static str> = None;
    const FILTERS: &'static [&'static str] = &["site_id", "name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] = &[("floating_ips", "ip_pool_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("site_id", Val::opt_text(self.site_id.as_ref())),
            ("name", Val::text(&self.name)),
            ("gateway", Val::opt_text(self.gateway.as_ref())),
        ]
    }
}

impl Resource for FloatingIp {
    const TABLE: &'static str = "floating_ips";
    const KIND: &'static str = "floating IP";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "ip_pool_id", "name", "nic_id"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("ip_pool_id", Val::text(&self.ip_pool_id.0)),
            ("name", Val::text(&self.name)),
            // The NIC it is attached to, for the data path: a detaching one shows the NIC
            // it leaves, but no longer translates for it.
            (
                "nic_id",
                Val::opt_text(
                    self.nic_id
                        .as_ref()
                        .filter(|_| matches!(self.state, FloatingIpState::Attaching | FloatingIpState::Attached)),
                ),
            ),
        ]
    }
}

impl Resource for SecurityGroup {
    const TABLE: &'static str = "security_groups";
    const KIND: &'static str = "security group";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "vpc_id", "name"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("vpc_id", Val::text(&self.vpc_id.0)),
            ("name", Val::text(&self.name)),
            ("is_default", Val::Int(self.is_default.then_some(1))),
        ]
    }
}

/// An IPv4 address (dotted text) as the integer the `ipv4` column holds.
fn addr_int(s: &str) -> Option<i64> {
    s.parse::<std::net::Ipv4Addr>().ok().map(|a| u32::from(a) as i64)
}

impl Resource for NetworkInterface {
    const TABLE: &'static str = "nics";
    const KIND: &'static str = "network interface";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "vpc_id", "subnet_id", "instance_id", "name"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("vpc_id", Val::text(&self.vpc_id.0)),
            ("subnet_id", Val::text(&self.subnet_id.0)),
            ("name", Val::text(&self.name)),
            ("mac", Val::text(&self.mac)),
            ("ipv4", Val::Int(addr_int(&self.ipv4))),
            ("instance_id", Val::opt_text(self.instance_id.as_ref())),
            ("slot", Val::Int(self.slot.map(i64::from))),
            ("snat_address", Val::Int(self.snat_address.as_deref().and_then(addr_int))),
        ]
    }
}

/// A NIC named in a refusal: its id and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicRef {
    pub id: String,
    pub name: String,
}

/// A named address range, for overlap checks: a sibling subnet's block, an IP pool's range.
#[derive(Clone, Debug)]
pub struct NamedRange {
    pub id: String,
    pub name: String,
    pub first: u32,
    pub last: u32,
}

/// Rows of `id, name, first_addr, last_addr`.
fn named_ranges(rows: &[sqlx::any::AnyRow]) -> Result<Vec<NamedRange>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(NamedRange {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                first: r.try_get::<i64, _>("first_addr")? as u32,
                last: r.try_get::<i64, _>("last_addr")? as u32,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

fn ints(rows: &[sqlx::any::AnyRow], col: &str) -> Result<Vec<i64>, StoreError> {
    rows.iter().map(|r| r.try_get::<i64, _>(col).map_err(StoreError::from)).collect()
}

fn nic_refs(rows: &[sqlx::any::AnyRow]) -> Result<Vec<NicRef>, StoreError> {
    rows.iter()
        .map(|r| Ok(NicRef { id: r.try_get("id")?, name: r.try_get("name")? }))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

impl Tx {
    /// Reads one object visible in `scope` WITHOUT locking it: to learn which parent to
    /// lock first (a NIC's or subnet's VPC), so every networking change takes its locks in
    /// one order — the VPC, then what is in it — and two of them never deadlock.
    pub async fn peek<T: Resource>(&mut self, scope: &plinth_domain::authz::Scope, id: &str) -> Result<T, StoreError> {
        let sql = crate::crud::get_sql::<T>(scope, id, "");
        match self.fetch(sql).await?.first() {
            Some(row) => crate::crud::decode_doc(row),
            None => Err(StoreError::NotFound { kind: T::KIND, id: id.to_string() }),
        }
    }

    /// The VPCs of an instance's NICs (unlocked: the caller locks them, then the NICs).
    pub async fn instance_vpcs(&mut self, instance_id: &str) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new("SELECT DISTINCT vpc_id FROM nics WHERE 1=1");
        sql.cond("instance_id =", Val::text(instance_id));
        sql.push(" ORDER BY vpc_id");
        self.fetch(sql).await?.iter().map(|r| r.try_get::<String, _>("vpc_id").map_err(StoreError::from)).collect()
    }

    /// Whether `vni` is taken (by a VPC or a subnet).
    pub async fn vni_taken(&mut self, vni: u32) -> Result<bool, StoreError> {
        let mut sql = Sql::new("SELECT vni FROM vnis WHERE 1=1");
        sql.cond("vni =", Val::Int(Some(vni as i64)));
        Ok(!self.fetch(sql).await?.is_empty())
    }

    /// Takes `vni` for `owner` (a VPC or subnet id); a taken one breaks the primary key.
    pub async fn claim_vni(&mut self, vni: u32, owner: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new("INSERT INTO vnis (vni, owner_id) VALUES (");
        let a = sql.arg(Val::Int(Some(vni as i64)));
        let b = sql.arg(Val::text(owner));
        sql.push(&format!("{a}, {b})"));
        self.write_later(sql, "vnis", "vni").await
    }

    /// Gives back the VNIs `owner` holds.
    pub async fn free_vnis(&mut self, owner: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new("DELETE FROM vnis WHERE 1=1");
        sql.cond("owner_id =", Val::text(owner));
        self.write_later(sql, "vnis", "vni").await
    }

    /// The blocks of a VPC's subnets.
    pub async fn subnet_blocks(&mut self, vpc_id: &str) -> Result<Vec<NamedRange>, StoreError> {
        let mut sql = Sql::new("SELECT id, name, first_addr, last_addr FROM subnets WHERE 1=1");
        sql.cond("vpc_id =", Val::text(vpc_id));
        sql.push(" ORDER BY first_addr");
        named_ranges(&self.fetch(sql).await?)
    }

    /// Serialises IP pool creates until commit (PostgreSQL: a transaction-scoped advisory
    /// lock; SQLite's writer is already one at a time), so an overlap check and the insert
    /// it allows are one step.
    pub async fn lock_ip_pools(&mut self) -> Result<(), StoreError> {
        if self.backend != crate::store::Backend::Postgres {
            return Ok(());
        }
        self.fetch(Sql::new("SELECT pg_advisory_xact_lock(7480002)")).await.map(drop)
    }

    /// The first pool whose range meets [first, last], if any.
    pub async fn ip_pool_overlapping(&mut self, first: u32, last: u32) -> Result<Option<NamedRange>, StoreError> {
        let mut sql = Sql::new("SELECT id, name, first_addr, last_addr FROM ip_pools WHERE 1=1");
        sql.cond("first_addr <=", Val::Int(Some(i64::from(last))));
        sql.cond("last_addr >=", Val::Int(Some(i64::from(first))));
        sql.push(" ORDER BY first_addr LIMIT 1");
        Ok(named_ranges(&self.fetch(sql).await?)?.into_iter().next())
    }

    /// The addresses a pool has given out, ascending.
    pub async fn pool_addresses(&mut self, pool_id: &str) -> Result<Vec<i64>, StoreError> {
        let mut sql = Sql::new("SELECT address FROM floating_ips WHERE 1=1");
        sql.cond("ip_pool_id =", Val::text(pool_id));
        sql.push(" UNION ALL SELECT n.snat_address AS address FROM nics n JOIN ip_pools p ON n.snat_address BETWEEN p.first_addr AND p.last_addr WHERE 1=1");
        sql.cond("p.id =", Val::text(pool_id));
        sql.push(" ORDER BY address");
        ints(&self.fetch(sql).await?, "address")
    }

    /// The subnet indexes a VPC uses, ascending.
    pub async fn subnet_indexes(&mut self, vpc_id: &str) -> Result<Vec<i64>, StoreError> {
        let mut sql = Sql::new("SELECT idx FROM subnets WHERE 1=1");
        sql.cond("vpc_id =", Val::text(vpc_id));
        sql.push(" ORDER BY idx");
        ints(&self.fetch(sql).await?, "idx")
    }

    /// The addresses NICs hold in a subnet, ascending.
    pub async fn subnet_addresses(&mut self, subnet_id: &str) -> Result<Vec<u32>, StoreError> {
        let mut sql = Sql::new("SELECT ipv4 FROM nics WHERE 1=1");
        sql.cond("subnet_id =", Val::text(subnet_id));
        sql.push(" ORDER BY ipv4");
        Ok(ints(&self.fetch(sql).await?, "ipv4")?.into_iter().map(|a| a as u32).collect())
    }

    /// The NIC that holds `addr` in a subnet, if any.
    pub async fn address_holder(&mut self, subnet_id: &str, addr: u32) -> Result<Option<NicRef>, StoreError> {
        let mut sql = Sql::new("SELECT id, name FROM nics WHERE 1=1");
        sql.cond("subnet_id =", Val::text(subnet_id));
        sql.cond("ipv4 =", Val::Int(Some(addr as i64)));
        Ok(nic_refs(&self.fetch(sql).await?)?.into_iter().next())
    }

    /// The port numbers a VPC's NICs use, ascending.
    pub async fn vpc_ports(&mut self, vpc_id: &str) -> Result<Vec<i64>, StoreError> {
        let mut sql = Sql::new("SELECT port FROM nics WHERE 1=1");
        sql.cond("vpc_id =", Val::text(vpc_id));
        sql.push(" ORDER BY port");
        ints(&self.fetch(sql).await?, "port")
    }

    /// Whether a NIC of the VPC has `mac`.
    pub async fn vpc_mac_taken(&mut self, vpc_id: &str, mac: &str) -> Result<bool, StoreError> {
        let mut sql = Sql::new("SELECT id FROM nics WHERE 1=1");
        sql.cond("vpc_id =", Val::text(vpc_id));
        sql.cond("mac =", Val::text(mac));
        Ok(!self.fetch(sql).await?.is_empty())
    }

    /// The NICs in a subnet (id order).
    pub async fn subnet_nics(&mut self, subnet_id: &str) -> Result<Vec<NicRef>, StoreError> {
        let mut sql = Sql::new("SELECT id, name FROM nics WHERE 1=1");
        sql.cond("subnet_id =", Val::text(subnet_id));
        sql.push(" ORDER BY id");
        nic_refs(&self.fetch(sql).await?)
    }

    /// How many rows of `table` (one of the VPC's child tables) belong to the VPC, the
    /// default group excluded for `security_groups`.
    pub async fn vpc_children(&mut self, vpc_id: &str) -> Result<(i64, i64, i64), StoreError> {
        let mut out = [0i64; 3];
        for (i, q) in [
            "SELECT COUNT(*) AS n FROM subnets WHERE 1=1",
            "SELECT COUNT(*) AS n FROM security_groups WHERE is_default IS NULL",
            "SELECT COUNT(*) AS n FROM nics WHERE 1=1",
        ]
        .iter()
        .enumerate()
        {
            let mut sql = Sql::new(*q);
            sql.cond("vpc_id =", Val::text(vpc_id));
            out[i] = self.fetch(sql).await?.first().map(|r| r.try_get::<i64, _>("n")).transpose()?.unwrap_or(0);
        }
        Ok((out[0], out[1], out[2]))
    }

    /// The NICs in a group, and the other groups whose rules name it as remote.
    pub async fn group_users(&mut self, sg_id: &str) -> Result<(Vec<NicRef>, Vec<String>), StoreError> {
        let mut sql = Sql::new(
            "SELECT n.id AS id, n.name AS name FROM nic_security_groups m JOIN nics n ON n.id = m.nic_id WHERE 1=1",
        );
        sql.cond("m.security_group_id =", Val::text(sg_id));
        sql.push(" ORDER BY n.id");
        let nics = nic_refs(&self.fetch(sql).await?)?;
        let mut sql = Sql::new("SELECT DISTINCT security_group_id AS id FROM security_group_rules WHERE 1=1");
        sql.cond("remote_group_id =", Val::text(sg_id));
        sql.cond("security_group_id <>", Val::text(sg_id));
        sql.push(" ORDER BY security_group_id");
        let groups =
            self.fetch(sql).await?.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<_, sqlx::Error>>()?;
        Ok((nics, groups))
    }

    /// Adds a rule row of a group (the group's document carries the rule too).
    pub async fn insert_rule(
        &mut self,
        sg: &SecurityGroup,
        rule: &SecurityGroupRule,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new(
            "INSERT INTO security_group_rules (id, security_group_id, tenant_id, vpc_id, remote_group_id, created_at, doc) VALUES (",
        );
        let vals = [
            Val::text(rule.id.as_str()),
            Val::text(sg.id.as_str()),
            Val::text(sg.tenant_id.as_str()),
            Val::text(sg.vpc_id.as_str()),
            Val::opt_text(rule.remote_group_id.as_ref()),
            Val::Int(Some(now.timestamp_micros())),
            Val::Text(Some(serde_json::to_string(rule).unwrap_or_default())),
        ];
        let ps: Vec<String> = vals.into_iter().map(|v| sql.arg(v)).collect();
        sql.push(&ps.join(", "));
        sql.push(")");
        self.write_later(sql, "security_group_rules", "security group rule").await
    }

    /// Removes rule rows: one (`rule_id`) or all of a group.
    pub async fn delete_rules(&mut self, sg_id: &str, rule_id: Option<&str>) -> Result<(), StoreError> {
        let mut sql = Sql::new("DELETE FROM security_group_rules WHERE 1=1");
        sql.cond("security_group_id =", Val::text(sg_id));
        if let Some(r) = rule_id {
            sql.cond("id =", Val::text(r));
        }
        self.write_later(sql, "security_group_rules", "security group rule").await
    }

    /// Replaces a NIC's group memberships (in `groups` order).
    pub async fn set_nic_groups(
        &mut self,
        nic_id: &str,
        vpc_id: &str,
        groups: &[SecurityGroupId],
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new("DELETE FROM nic_security_groups WHERE 1=1");
        sql.cond("nic_id =", Val::text(nic_id));
        self.write_later(sql, "nic_security_groups", "security group membership").await?;
        for (i, g) in groups.iter().enumerate() {
            let mut sql =
                Sql::new("INSERT INTO nic_security_groups (nic_id, security_group_id, vpc_id, position) VALUES (");
            let vals = [Val::text(nic_id), Val::text(g.as_str()), Val::text(vpc_id), Val::Int(Some(i as i64))];
            let ps: Vec<String> = vals.into_iter().map(|v| sql.arg(v)).collect();
            sql.push(&ps.join(", "));
            sql.push(")");
            self.write_later(sql, "nic_security_groups", "security group membership").await?;
        }
        Ok(())
    }

    /// Bumps the VPC's firewall generation for a change to its NICs or their groups'
    /// members: every group of the VPC moves to it (a member's address is in the filter of
    /// every group whose rules name the group, and of the member itself).
    pub async fn bump_firewall(&mut self, vpc_id: &str) -> Result<i64, StoreError> {
        let generation = self.next_firewall_generation(vpc_id).await?;
        self.move_groups(generation, "vpc_id =", vpc_id).await?;
        Ok(generation)
    }

    /// Bumps the VPC's firewall generation for a change to one group's rules: only that
    /// group moves to it (its rules are in its own members' filters alone).
    pub async fn bump_group_firewall(&mut self, vpc_id: &str, group_id: &str) -> Result<i64, StoreError> {
        let generation = self.next_firewall_generation(vpc_id).await?;
        self.move_groups(generation, "id =", group_id).await?;
        Ok(generation)
    }

    /// Sets the filter generation of the groups where `cond` (`"id ="`, `"vpc_id ="`) `value`.
    async fn move_groups(&mut self, generation: i64, cond: &str, value: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE security_groups SET filter_generation = ");
        let g = sql.arg(Val::Int(Some(generation)));
        sql.push(&format!("{g} WHERE 1=1"));
        sql.cond(cond, Val::text(value));
        self.write_later(sql, "security_groups", "security group").await
    }

    async fn next_firewall_generation(&mut self, vpc_id: &str) -> Result<i64, StoreError> {
        let mut sql = Sql::new("UPDATE vpcs SET firewall_generation = firewall_generation + 1 WHERE 1=1");
        sql.cond("id =", Val::text(vpc_id));
        self.write_later(sql, "vpcs", "vpc").await?;
        self.firewall_generation(vpc_id).await
    }

    /// The hosts carrying a member of the group.
    pub async fn group_hosts(&mut self, group_id: &str) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new(
            "SELECT DISTINCT n.host_id AS host_id FROM nic_security_groups m JOIN nics n ON n.id = m.nic_id \
             WHERE n.host_id IS NOT NULL",
        );
        sql.cond("m.security_group_id =", Val::text(group_id));
        self.fetch(sql).await?.iter().map(|r| r.try_get("host_id").map_err(StoreError::from)).collect()
    }

    /// The VPC's firewall generation.
    pub async fn firewall_generation(&mut self, vpc_id: &str) -> Result<i64, StoreError> {
        let mut sql = Sql::new("SELECT firewall_generation FROM vpcs WHERE 1=1");
        sql.cond("id =", Val::text(vpc_id));
        Ok(self.fetch(sql).await?.first().map(|r| r.try_get::<i64, _>("firewall_generation")).transpose()?.unwrap_or(1))
    }

    /// The project's default VPC, if it has one.
    pub async fn default_vpc(&mut self, project_id: &str) -> Result<Option<Vpc>, StoreError> {
        let mut sql = Sql::new("SELECT doc FROM vpcs WHERE is_default = 1");
        sql.cond("project_id =", Val::text(project_id));
        sql.push(self.lock());
        match self.fetch(sql).await?.first() {
            Some(r) => Ok(Some(crate::crud::decode_doc(r)?)),
            None => Ok(None),
        }
    }

    /// Marks whether a NIC was made by its instance's create (and goes with it).
    pub async fn set_nic_owned(&mut self, nic_id: &str, owned: bool) -> Result<(), StoreError> {
        self.set_column("nics", nic_id, "owned_by_instance", Val::Int(Some(owned as i64))).await
    }

    /// The NICs an instance's delete removes (made by its create), and the ones it only
    /// detaches.
    pub async fn instance_nics(&mut self, instance_id: &str) -> Result<Vec<(NetworkInterface, bool)>, StoreError> {
        let mut sql = Sql::new("SELECT doc, owned_by_instance FROM nics WHERE 1=1");
        sql.cond("instance_id =", Val::text(instance_id));
        sql.push(" ORDER BY slot");
        sql.push(self.lock());
        let rows = self.fetch(sql).await?;
        rows.iter().map(|r| Ok((crate::crud::decode_doc(r)?, r.try_get::<i64, _>("owned_by_instance")? != 0))).collect()
    }

    /// Takes a NIC off its host (unplugged from its instance): no host, no barrier, no
    /// report.
    pub async fn unplace_nic(&mut self, nic_id: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new(
            "UPDATE nics SET host_id = NULL, barrier = NULL, observed_components = NULL, \
             observed_filter_generation = NULL WHERE 1=1",
        );
        sql.cond("id =", Val::text(nic_id));
        self.write_later(sql, "nics", "network interface").await
    }

    /// Every IP pool's id, by name (the order SNAT addresses are taken from).
    pub async fn ip_pool_ids(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = self.fetch(Sql::new("SELECT id FROM ip_pools ORDER BY name")).await?;
        rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
    }

    /// The host carrying a NIC now (the column the data plane keeps).
    pub async fn nic_host(&mut self, nic_id: &str) -> Result<Option<String>, StoreError> {
        let mut sql = Sql::new("SELECT host_id FROM nics WHERE 1=1");
        sql.cond("id =", Val::text(nic_id));
        Ok(match self.fetch(sql).await?.first() {
            Some(r) => r.try_get("host_id")?,
            None => None,
        })
    }

    /// A host's desired network generation now (0 for an unknown host).
    pub async fn host_desired(&mut self, host_id: &str) -> Result<i64, StoreError> {
        let mut sql = Sql::new("SELECT desired_generation FROM hosts WHERE 1=1");
        sql.cond("id =", Val::text(host_id));
        Ok(match self.fetch(sql).await?.first() {
            Some(r) => r.try_get("desired_generation")?,
            None => 0,
        })
    }

    /// Sets (or clears) what a floating IP's attach or detach waits for: `host` applying
    /// network generation `generation`.
    pub async fn set_floating_barrier(&mut self, id: &str, barrier: Option<(&str, i64)>) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE floating_ips SET barrier_host = ");
        let h = sql.arg(Val::opt_text(barrier.map(|b| b.0)));
        let g = sql.arg(Val::Int(barrier.map(|b| b.1)));
        sql.push(&format!("{h}, barrier_generation = {g} WHERE 1=1"));
        sql.cond("id =", Val::text(id));
        self.write_later(sql, "floating_ips", "floating IP").await
    }

    /// Deletes a NIC's row with its memberships.
    pub async fn remove_nic(&mut self, nic_id: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new("DELETE FROM nic_security_groups WHERE 1=1");
        sql.cond("nic_id =", Val::text(nic_id));
        self.write_later(sql, "nic_security_groups", "security group membership").await?;
        self.remove::<NetworkInterface>(nic_id).await?;
        Ok(())
    }
}

impl Store {
    /// Of the floating IPs `ids`, those whose last attach or detach its host has applied
    /// (or that wait for nothing).
    pub async fn floating_settled(&self, ids: &[&str]) -> Result<std::collections::BTreeSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let mut sql = Sql::new(
            "SELECT f.id AS id FROM floating_ips f LEFT JOIN host_networks h ON h.host_id = f.barrier_host \
             WHERE (f.barrier_host IS NULL OR h.applied_generation >= f.barrier_generation) AND f.id IN (",
        );
        let ps: Vec<String> = ids.iter().map(|s| sql.arg(Val::text(*s))).collect();
        sql.push(&ps.join(", "));
        sql.push(")");
        let rows = sql.query().fetch_all(&self.read).await?;
        rows.iter().map(|r| r.try_get::<String, _>("id").map_err(StoreError::from)).collect()
    }

    /// How many addresses NICs hold in each of `subnet_ids`.
    pub async fn subnet_usage(&self, subnet_ids: &[&str]) -> Result<Vec<(String, u32)>, StoreError> {
        if subnet_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new("SELECT subnet_id, COUNT(*) AS n FROM nics WHERE subnet_id IN (");
        let ps: Vec<String> = subnet_ids.iter().map(|s| sql.arg(Val::text(*s))).collect();
        sql.push(&ps.join(", "));
        sql.push(") GROUP BY subnet_id");
        let rows = sql.query().fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>("subnet_id")?, r.try_get::<i64, _>("n")? as u32)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// A subnet by id or, within `project_id`, by name, visible in `scope`.
    pub async fn subnet_by_ref(
        &self,
        scope: &plinth_domain::authz::Scope,
        project_id: &str,
        r: &str,
    ) -> Result<Subnet, StoreError> {
        if SubnetId::parse(r).is_some() {
            return self.get::<Subnet>(scope, r).await;
        }
        let page = self
            .list::<Subnet>(scope, &[("project_id", project_id.to_string()), ("name", r.to_string())], 2, None)
            .await?;
        let mut items = page.items;
        match items.len() {
            0 => Err(StoreError::NotFound { kind: "subnet", id: r.to_string() }),
            1 => Ok(items.remove(0)),
            _ => Err(StoreError::Refused {
                status: 409,
                code: "ambiguous_name",
                detail: format!("more than one subnet of the project is named {r} (in different VPCs); name it by id"),
            }),
        }
    }
}
