//! Plinth's side of `bench/billing`: a month of usage ledger for N tenants × M instances,
//! written through `Store::insert_usage`, then the invoice run (`plinth_server::billing::
//! invoice_for` for every tenant: read the period's records, rate them, upsert the draft
//! invoice) against one SQL aggregation over the same rows in the same database. Both must
//! give the same total for every tenant, and so must the generator's own sums.
//!
//!   plinth-bench-billing --backend sqlite --url sqlite:///path/db [options]
//!   plinth-bench-billing --backend postgres --pg-admin postgres://…/postgres --pg-db NAME [options]
//!   plinth-bench-billing --dry-run [options]      (generate and count only)
//!
//! Options: --tenants N (10000) --instances M (10) --cycles C (190) --seed S (1)
//!   --concurrency C (invoice_for calls in flight, 4) --batch B (rows per INSERT, 1000)
//!   --chunk R (records per insert_usage call, 20000) --insert-tasks K (1 on SQLite, 2 on PostgreSQL)
//!   --order time|tenant (time) --rate-pass (also time rate_as_of alone, after the invoice run)
//!   --sweep 1,2,4,8 (then re-run the invoice run, recomputing the drafts, at each concurrency)
//!   --baseline group|group-scan|join (the SQL statement's form; group-scan on SQLite, group on PostgreSQL)
//!   --baseline-only --url URL (time every baseline form, with its plan, on an existing database)
//!
//! Prints what it measures as it goes and one `RESULT {json}` line last. Exits non-zero
//! when anything fails or any total differs.

use chrono::{TimeZone, Utc};
use plinth_api::{
    ChargeModel, EventId, HostId, InstanceId, Meter, Price, PriceBook, PriceBookId, ProjectId, Rounding, Tenant,
    TenantId, UsageRecord, UsageRecordId,
};
use plinth_domain::metering::{self, Period, at_micros, micros};
use plinth_server::ServerConfig;
use plinth_server::state::AppState;
use plinth_store::{AuditEntry, Store};
use serde_json::json;
use sqlx::{AnyConnection, Connection, Executor, Row};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const SEC: i64 = 1_000_000;
const HOUR: i64 = 3600 * SEC;
const MICROS: i128 = 1_000_000;

/// Shapes: name, boot disk GiB. The last one carries GPUs.
const SHAPES: [(&str, i64); 4] = [("c1.small", 20), ("c1.medium", 80), ("c1.large", 200), ("g1.xlarge", 400)];
const GPU_SHAPE: usize = 3;
const GPU_CLASSES: [&str; 2] = ["nvidia-h100-80gb", "nvidia-a100-80gb"];
/// Hosts records name in their attributes.
const HOSTS: usize = 512;

/// The price book: (meter, dimension, pricing unit, units per pricing unit, micro-USD per
/// pricing unit). Every (meter, dimension) the generator writes has exactly one price, so
/// one invoice line per (meter, dimension) and no wildcard. The line index of a record is
/// its index here.
const PRICES: [(Meter, &str, &str, i64, i64); 11] = [
    (Meter::AllocatedSeconds, "c1.small", "hour", 3600, 3_300),
    (Meter::AllocatedSeconds, "c1.medium", "hour", 3600, 13_100),
    (Meter::AllocatedSeconds, "c1.large", "hour", 3600, 52_700),
    (Meter::AllocatedSeconds, "g1.xlarge", "hour", 3600, 161_000),
    (Meter::RunningSeconds, "c1.small", "hour", 3600, 20_800),
    (Meter::RunningSeconds, "c1.medium", "hour", 3600, 83_300),
    (Meter::RunningSeconds, "c1.large", "hour", 3600, 333_100),
    (Meter::RunningSeconds, "g1.xlarge", "hour", 3600, 1_015_000),
    (Meter::GpuSeconds, "nvidia-h100-80gb", "GPU-hour", 3600, 2_487_000),
    (Meter::GpuSeconds, "nvidia-a100-80gb", "GPU-hour", 3600, 1_293_000),
    // 30-day GiB-month.
    (Meter::DiskGibSeconds, "local", "GiB-month", 2_592_000, 80_000),
];
const LINES: usize = PRICES.len();
const ALLOC: usize = 0;
const RUN: usize = 4;
const GPU: usize = 8;
const DISK: usize = 10;

// --- arguments --------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Order {
    /// Records in the order they would have been opened over the month (all tenants interleaved).
    Time,
    /// Tenant after tenant (each tenant's records together).
    Tenant,
}

struct Args {
    backend: String,
    url: Option<String>,
    pg_admin: Option<String>,
    pg_db: Option<String>,
    tenants: usize,
    instances: usize,
    cycles: f64,
    seed: u64,
    concurrency: usize,
    batch: usize,
    chunk: usize,
    insert_tasks: usize,
    order: Order,
    rate_pass: bool,
    dry_run: bool,
    /// Concurrencies to re-run the invoice run at afterwards (recomputing the drafts).
    sweep: Vec<usize>,
    /// Baseline statement variant (see `baseline_sql`).
    baseline: String,
    /// Only time the baseline variants on an existing database (--url).
    baseline_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        backend: "sqlite".into(),
        url: None,
        pg_admin: None,
        pg_db: None,
        tenants: 10_000,
        instances: 10,
        cycles: 190.0,
        seed: 1,
        concurrency: 4,
        batch: 1000,
        chunk: 20_000,
        insert_tasks: 0,
        order: Order::Time,
        rate_pass: false,
        dry_run: false,
        sweep: Vec::new(),
        baseline: String::new(),
        baseline_only: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let k = argv[i].as_str();
        let flag = matches!(k, "--rate-pass" | "--dry-run" | "--baseline-only");
        let v = if flag { "" } else { argv.get(i + 1).map(String::as_str).ok_or(format!("{k} needs a value"))? };
        let num = |v: &str| v.parse::<usize>().map_err(|_| format!("{k}: not a number: {v}"));
        match k {
            "--backend" => a.backend = v.into(),
            "--url" => a.url = Some(v.into()),
            "--pg-admin" => a.pg_admin = Some(v.into()),
            "--pg-db" => a.pg_db = Some(v.into()),
            "--tenants" => a.tenants = num(v)?,
            "--instances" => a.instances = num(v)?,
            "--cycles" => a.cycles = v.parse().map_err(|_| format!("--cycles: not a number: {v}"))?,
            "--seed" => a.seed = num(v)? as u64,
            "--concurrency" => a.concurrency = num(v)?.max(1),
            "--batch" => a.batch = num(v)?.max(1),
            "--chunk" => a.chunk = num(v)?.max(1),
            "--insert-tasks" => a.insert_tasks = num(v)?,
            "--order" => {
                a.order = match v {
                    "time" => Order::Time,
                    "tenant" => Order::Tenant,
                    _ => return Err(format!("--order: time or tenant, not {v}")),
                }
            }
            "--sweep" => {
                a.sweep = v.split(',').map(|c| num(c.trim())).collect::<Result<Vec<_>, _>>()?;
            }
            "--baseline" => a.baseline = v.into(),
            "--baseline-only" => a.baseline_only = true,
            "--rate-pass" => a.rate_pass = true,
            "--dry-run" => a.dry_run = true,
            _ => return Err(format!("unknown argument {k}")),
        }
        i += if flag { 1 } else { 2 };
    }
    if a.baseline.is_empty() {
        a.baseline = if a.backend == "postgres" { "group" } else { "group-scan" }.into();
    }
    if a.insert_tasks == 0 {
        a.insert_tasks = if a.backend == "postgres" { 2 } else { 1 };
    }
    Ok(a)
}

// --- the month's lifecycles ---------------------------------------------------------------

/// splitmix64: small, seeded, good enough for a workload.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut r = Rng(seed);
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [a, b) (b > a).
    fn range(&mut self, a: i64, b: i64) -> i64 {
        a + (self.next() % (b - a) as u64) as i64
    }
}

/// One closed interval, before it becomes a `UsageRecord`.
#[derive(Clone, Copy)]
struct Pend {
    line: u8,
    start: i64,
    end: i64,
    mult: i64,
    first: bool,
    host: u16,
}

/// One instance's month, generated a claim (allocation window) at a time, in start order.
struct Inst {
    tenant: u32,
    id: String,
    shape: usize,
    gpu: Option<(usize, i64)>,
    disk: i64,
    /// Mean length of one start/stop cycle (µs); 0 for an instance that runs through.
    cycle_len: i64,
    rng: Rng,
    /// Where the next claim may begin.
    t: i64,
    death: i64,
    /// Existed before the month (its first intervals continue from the previous period).
    pre: bool,
    done: bool,
    pending: VecDeque<Pend>,
}

impl Inst {
    fn new(seed: u64, tenant: u32, k: u32, p: &Period, cycles: f64) -> Inst {
        let (p0, p1) = (micros(p.start), micros(p.end));
        let mut rng = Rng::new(seed ^ (u64::from(tenant) << 20) ^ u64::from(k) ^ 0x5EED_0000_0000_0000);
        let gpu = rng.f() < 0.10;
        let shape = if gpu {
            GPU_SHAPE
        } else {
            match rng.f() {
                x if x < 0.50 => 0,
                x if x < 0.85 => 1,
                _ => 2,
            }
        };
        let gpu = gpu.then(|| {
            let class = if rng.f() < 0.6 { 0 } else { 1 };
            (class, [1, 2, 4, 8][(rng.next() % 4) as usize])
        });
        let cycling = rng.f() < 0.25;
        let pre = rng.f() < 0.40;
        let birth = if pre { p0 } else { rng.range(p0, p1 - 2 * HOUR) };
        let death = if rng.f() < 0.30 { rng.range(birth + HOUR, p1) } else { p1 };
        let cycle_len = if cycling {
            let n = (cycles * (0.5 + rng.f())).round().max(1.0);
            ((death - birth) as f64 / n) as i64
        } else {
            0
        };
        Inst {
            tenant,
            id: InstanceId::generate().0,
            shape,
            gpu,
            disk: SHAPES[shape].1,
            cycle_len,
            rng,
            t: birth,
            death,
            pre,
            done: false,
            pending: VecDeque::new(),
        }
    }

    /// Queues the intervals of the next claim: allocated, GPU and disk for the claim,
    /// running intervals inside it. Sets `done` after the last one.
    fn next_claim(&mut self, p1: i64) {
        if self.done {
            return;
        }
        let a = self.t;
        if a >= self.death {
            self.done = true;
            return;
        }
        let cont = self.pre; // continues from the previous period: not a start
        self.pre = false;
        let host = (self.rng.next() % HOSTS as u64) as u16;
        let rng = &mut self.rng;
        let mut runs: Vec<(i64, i64, bool)> = Vec::new();
        let b;
        if self.cycle_len == 0 {
            let rs = if cont { a } else { a + rng.range(5 * SEC, 60 * SEC) };
            let re = if self.death == p1 { p1 } else { self.death - rng.range(SEC, 30 * SEC) };
            if re > rs {
                runs.push((rs, re, !cont));
            }
            b = self.death;
            self.done = true;
        } else {
            let mut cur = a;
            let mut cont_run = cont;
            loop {
                let cyc = (self.cycle_len as f64 * (0.5 + rng.f())) as i64;
                let rs = if cont_run { cur } else { cur + rng.range(5 * SEC, 60 * SEC) };
                let re = rs + (cyc as f64 * (0.3 + 0.6 * rng.f())) as i64;
                if re >= self.death {
                    if self.death > rs {
                        runs.push((rs, self.death, !cont_run));
                    }
                    b = self.death;
                    self.done = true;
                    break;
                }
                runs.push((rs, re, !cont_run));
                cont_run = false;
                let stopped = re + rng.range(SEC, 30 * SEC);
                let next = (cur + cyc).max(stopped + SEC);
                if rng.f() < 0.5 {
                    // Stopped and released: the claim ends, the next start makes a new one.
                    b = stopped.min(self.death);
                    self.t = next;
                    break;
                }
                cur = next;
                if cur >= self.death {
                    b = self.death;
                    self.done = true;
                    break;
                }
            }
        }
        let first = !cont;
        let iv = |line: usize, start, end, mult, first| Pend { line: line as u8, start, end, mult, first, host };
        self.pending.push_back(iv(ALLOC + self.shape, a, b, 1, first));
        if let Some((class, count)) = self.gpu {
            self.pending.push_back(iv(GPU + class, a, b, count, first));
        }
        self.pending.push_back(iv(DISK, a, b, self.disk, first));
        for (s, e, f) in runs {
            self.pending.push_back(iv(RUN + self.shape, s, e, 1, f));
        }
    }

    /// The next interval in start order, generating the next claim when needed.
    fn next_pend(&mut self, p1: i64) -> Option<Pend> {
        while self.pending.is_empty() && !self.done {
            self.next_claim(p1);
        }
        self.pending.pop_front()
    }

    fn peek_start(&mut self, p1: i64) -> Option<i64> {
        while self.pending.is_empty() && !self.done {
            self.next_claim(p1);
        }
        self.pending.front().map(|p| p.start)
    }
}

/// What records are made of besides the interval.
struct Ctx {
    tenants: Vec<TenantId>,
    projects: Vec<ProjectId>,
    hosts: Vec<String>,
    period: Period,
    created_at: chrono::DateTime<Utc>,
}

fn record(ctx: &Ctx, inst: &Inst, p: &Pend) -> UsageRecord {
    let (meter, dimension, ..) = PRICES[p.line as usize];
    let mut attributes = BTreeMap::new();
    attributes.insert("host".to_string(), ctx.hosts[p.host as usize].clone());
    attributes.insert("runtime_class".to_string(), "vm".to_string());
    attributes.insert("shape".to_string(), SHAPES[inst.shape].0.to_string());
    if let Some((class, _)) = inst.gpu {
        attributes.insert("gpu_class".to_string(), GPU_CLASSES[class].to_string());
    }
    UsageRecord {
        id: UsageRecordId::generate(),
        tenant_id: ctx.tenants[inst.tenant as usize].clone(),
        project_id: ctx.projects[inst.tenant as usize].clone(),
        resource_id: inst.id.clone(),
        resource_kind: "instance".to_string(),
        meter,
        dimension: dimension.to_string(),
        unit: meter.unit().to_string(),
        start_at: at_micros(p.start),
        end_at: Some(at_micros(p.end)),
        multiplier: p.mult,
        quantity_micros: Some(p.mult * (p.end - p.start)),
        first: p.first,
        period_start: ctx.period.start,
        attributes,
        cause: EventId::generate().0,
        created_at: ctx.created_at,
    }
}

/// What the generator made: per tenant, Σ quantity per invoice line.
struct Generated {
    sums: Vec<[i128; LINES]>,
    records: u64,
    instances_cycling: u64,
}

/// Generates the month in `order`, handing chunks of `chunk` records to `sink`.
fn generate(
    a: &Args,
    ctx: &Ctx,
    mut sink: impl FnMut(Vec<UsageRecord>) -> Result<(), String>,
) -> Result<Generated, String> {
    let p1 = micros(ctx.period.end);
    let mut g = Generated { sums: vec![[0; LINES]; a.tenants], records: 0, instances_cycling: 0 };
    let mut buf: Vec<UsageRecord> = Vec::with_capacity(a.chunk);
    let mut emit = |g: &mut Generated, inst: &Inst, p: Pend, buf: &mut Vec<UsageRecord>| -> Result<(), String> {
        if !(p.end > p.start && p.start >= micros(ctx.period.start) && p.end <= p1) {
            return Err(format!("generated an interval outside the period or empty: {} – {}", p.start, p.end));
        }
        g.sums[inst.tenant as usize][p.line as usize] += i128::from(p.mult) * i128::from(p.end - p.start);
        g.records += 1;
        buf.push(record(ctx, inst, &p));
        if buf.len() >= a.chunk {
            sink(std::mem::replace(buf, Vec::with_capacity(a.chunk)))?;
        }
        Ok(())
    };
    let new_inst = |t: usize, k: usize| Inst::new(a.seed, t as u32, k as u32, &ctx.period, a.cycles);
    match a.order {
        Order::Tenant => {
            for t in 0..a.tenants {
                for k in 0..a.instances {
                    let mut inst = new_inst(t, k);
                    g.instances_cycling += u64::from(inst.cycle_len > 0);
                    while let Some(p) = inst.next_pend(p1) {
                        emit(&mut g, &inst, p, &mut buf)?;
                    }
                }
            }
        }
        Order::Time => {
            // Every instance at once, merged by start time: the order a live ledger gets
            // its rows in (a record is inserted when its interval opens).
            let mut insts: Vec<Inst> = Vec::with_capacity(a.tenants * a.instances);
            let mut heap = BinaryHeap::new();
            for t in 0..a.tenants {
                for k in 0..a.instances {
                    let mut inst = new_inst(t, k);
                    g.instances_cycling += u64::from(inst.cycle_len > 0);
                    if let Some(s) = inst.peek_start(p1) {
                        heap.push(Reverse((s, insts.len())));
                    }
                    insts.push(inst);
                }
            }
            while let Some(Reverse((_, i))) = heap.pop() {
                let inst = &mut insts[i];
                let p = inst.next_pend(p1).expect("peeked");
                let next = inst.peek_start(p1);
                emit(&mut g, &insts[i], p, &mut buf)?;
                if let Some(s) = next {
                    heap.push(Reverse((s, i)));
                }
            }
        }
    }
    if !buf.is_empty() {
        sink(buf)?;
    }
    Ok(g)
}

/// round_half_up(q × price / (upp × 1e6)), as rating computes it (exact, in i128).
fn line_amount(line: usize, q: i128) -> i128 {
    let (_, _, _, upp, price) = PRICES[line];
    let den = i128::from(upp) * MICROS;
    let num = q * i128::from(price);
    let (floor, rem) = (num.div_euclid(den), num.rem_euclid(den));
    floor + i128::from(rem >= den - rem)
}

// --- the baseline ---------------------------------------------------------------------------

/// The one SQL statement: Σ quantity per (tenant, meter, dimension) of the period, priced
/// and rounded half up per line, summed per tenant. Prices come as a VALUES list in the
/// statement (a CTE), not a table.
///
/// SQLite has 64-bit integers only: q × price may not fit, so it is split as
/// (q / den) × price + ((q % den) × price + den / 2) / den, which equals round_half_up(q ×
/// price / den) for q ≥ 0 and even den (den = upp × 1e6), and (q % den) × price < den ×
/// price < 2^63 for these prices. PostgreSQL's SUM(bigint) is NUMERIC: div() on it is exact.
///
/// Variants: `group` (the default: Σ per line first, then price the ~100 k lines), `join`
/// (join every record to its price, then group), `group-scan` (`group` with SQLite told
/// not to use an index: `FROM usage_records NOT INDEXED`; on PostgreSQL the same as `group`).
fn baseline_sql(postgres: bool, variant: &str) -> Result<String, String> {
    let values: Vec<String> = PRICES
        .iter()
        .map(|(m, d, _, upp, price)| format!("('{}', '{}', {}, {})", m.as_str(), d, i128::from(*upp) * MICROS, price))
        .collect();
    let values = values.join(", ");
    let amount = if postgres {
        "CAST(SUM(div(q * price + den / 2, den)) AS BIGINT)"
    } else {
        "SUM((q / den) * price + ((q % den) * price + den / 2) / den)"
    };
    let table = if variant == "group-scan" && !postgres { "usage_records NOT INDEXED" } else { "usage_records" };
    Ok(match variant {
        "group" | "group-scan" => format!(
            "WITH prices (meter, dimension, den, price) AS (VALUES {values}), \
             lines AS (SELECT tenant_id, meter, dimension, SUM(quantity) AS q FROM {table} \
                       WHERE period_start = $1 GROUP BY tenant_id, meter, dimension) \
             SELECT l.tenant_id, {amount} AS total \
             FROM lines l JOIN prices p ON p.meter = l.meter AND p.dimension = l.dimension \
             GROUP BY l.tenant_id ORDER BY l.tenant_id"
        ),
        "join" => format!(
            "WITH prices (meter, dimension, den, price) AS (VALUES {values}), \
             lines AS (SELECT u.tenant_id AS tenant_id, SUM(u.quantity) AS q, p.den AS den, p.price AS price \
                       FROM {table} u JOIN prices p ON p.meter = u.meter AND p.dimension = u.dimension \
                       WHERE u.period_start = $1 \
                       GROUP BY u.tenant_id, u.meter, u.dimension, p.den, p.price) \
             SELECT tenant_id, {amount} AS total FROM lines GROUP BY tenant_id ORDER BY tenant_id"
        ),
        v => return Err(format!("unknown baseline variant {v} (group, group-scan, join)")),
    })
}

/// The database's plan for the baseline, one line per step.
async fn baseline_plan(url: &str, postgres: bool, variant: &str, period_start: i64) -> Result<Vec<String>, String> {
    let mut conn = AnyConnection::connect(url).await.map_err(|e| format!("baseline connect: {e}"))?;
    let sql = baseline_sql(postgres, variant)?;
    let explain = if postgres { format!("EXPLAIN {sql}") } else { format!("EXPLAIN QUERY PLAN {sql}") };
    let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
        .bind(period_start)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("explain: {e}"))?;
    let _ = conn.close().await;
    rows.iter()
        .map(|r| r.try_get::<String, _>(if postgres { 0 } else { 3 }).map_err(|e| e.to_string()))
        .collect()
}

async fn baseline(
    url: &str,
    postgres: bool,
    variant: &str,
    period_start: i64,
) -> Result<(f64, HashMap<String, i64>), String> {
    let mut conn = AnyConnection::connect(url).await.map_err(|e| format!("baseline connect: {e}"))?;
    let sql = baseline_sql(postgres, variant)?;
    let t0 = Instant::now();
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(period_start)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("baseline query: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let mut out = HashMap::with_capacity(rows.len());
    for r in &rows {
        let t: String = r.try_get(0).map_err(|e| e.to_string())?;
        let v: i64 = r.try_get(1).map_err(|e| e.to_string())?;
        out.insert(t, v);
    }
    let _ = conn.close().await;
    Ok((secs, out))
}

// --- helpers --------------------------------------------------------------------------------

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn say(msg: impl AsRef<str>) {
    println!("{}", msg.as_ref());
}

fn the_period() -> Period {
    metering::period_of(Utc.with_ymd_and_hms(2026, 10, 15, 0, 0, 0).unwrap(), 1)
}

fn price_book() -> PriceBook {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    PriceBook {
        id: PriceBookId::generate(),
        name: "default".into(),
        version: 1,
        currency: "USD".into(),
        effective_from: at,
        prices: PRICES
            .iter()
            .map(|(meter, dim, unit, upp, price)| Price {
                meter: *meter,
                dimension: Some(dim.to_string()),
                model: ChargeModel::Flat,
                pricing_unit: unit.to_string(),
                units_per_pricing_unit: *upp,
                unit_price_micros: *price,
                tiers: vec![],
                min_seconds_per_start: 0,
                rounding: Rounding::HalfUp,
            })
            .collect(),
        generation: 1,
        created_at: at,
        updated_at: at,
    }
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry { actor_user_id: None, actor_token_id: None, action: action.into(), request_id: "bench-billing".into() }
}

/// Runs `f(i)` for i in 0..n on `conc` spawned tasks; the first error stops the run.
async fn run_all<T, F, Fut>(n: usize, conc: usize, f: F) -> Result<Vec<T>, String>
where
    T: Send + 'static + Default + Clone,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for _ in 0..conc.min(n.max(1)) {
        let (next, f) = (next.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, String>(got);
                }
                match f(i).await {
                    Ok(v) => got.push((i, v)),
                    Err(e) => {
                        next.store(n, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }));
    }
    let mut out = vec![T::default(); n];
    for t in tasks {
        for (i, v) in t.await.map_err(|e| e.to_string())?? {
            out[i] = v;
        }
    }
    Ok(out)
}

// --- the run ----------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("plinth-bench-billing: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(a).await {
        eprintln!("plinth-bench-billing: error: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let period = the_period();
    let p0 = micros(period.start);
    let n = a.tenants;
    let ctx = Arc::new(Ctx {
        tenants: (0..n).map(|_| TenantId::generate()).collect(),
        projects: (0..n).map(|_| ProjectId::generate()).collect(),
        hosts: (0..HOSTS).map(|_| HostId::generate().0).collect(),
        period,
        created_at: Utc::now(),
    });
    say(format!(
        "period {} – {}; {} tenants × {} instances, ~25 % cycling (mean {} start/stop cycles), order {:?}",
        period.start.to_rfc3339(),
        period.end.to_rfc3339(),
        n,
        a.instances,
        a.cycles,
        a.order
    ));

    if a.dry_run {
        let t0 = Instant::now();
        let g = generate(&a, &ctx, |_| Ok(()))?;
        let secs = t0.elapsed().as_secs_f64();
        say(format!(
            "generated {} records ({:.1} per instance, {} cycling instances) in {:.1} s, peak RSS {:.0} MiB",
            g.records,
            g.records as f64 / (n * a.instances) as f64,
            g.instances_cycling,
            secs,
            mib(status_kib("VmHWM:"))
        ));
        println!("RESULT {}", json!({ "records": g.records, "generate_s": secs }));
        return Ok(());
    }

    // The database.
    let postgres = a.backend == "postgres";
    if a.baseline_only {
        sqlx::any::install_default_drivers();
        let url = a.url.clone().ok_or("--baseline-only needs --url")?;
        for v in ["group", "group-scan", "join"] {
            if postgres && v == "group-scan" {
                continue;
            }
            say(format!("baseline form {v}:"));
            for line in baseline_plan(&url, postgres, v, p0).await? {
                say(format!("  plan: {line}"));
            }
            for _ in 0..2 {
                let (s, totals) = baseline(&url, postgres, v, p0).await?;
                let sum: i128 = totals.values().map(|&t| i128::from(t)).sum();
                say(format!("  {s:.2} s, {} tenants, Σ {sum}", totals.len()));
            }
        }
        return Ok(());
    }
    let url = if postgres {
        let admin = a.pg_admin.clone().ok_or("--pg-admin is needed on postgres")?;
        let name = a.pg_db.clone().unwrap_or_else(|| format!("bench_billing_{}", std::process::id()));
        Store::create_postgres_database(&admin, &name).await.map_err(|e| format!("create database: {e}"))?
    } else {
        a.url.clone().ok_or("--url sqlite:///… is needed on sqlite")?
    };
    let store = Store::open(&url).await.map_err(|e| format!("open {url}: {e}"))?;
    say(format!("backend {} at {url}", a.backend));

    // Tenants (invoices reference them) and the price book.
    let t0 = Instant::now();
    store.insert(&price_book(), &audit("price_books.create")).await.map_err(|e| e.to_string())?;
    {
        let (store, ctx) = (store.clone(), ctx.clone());
        run_all(n, 4, move |i| {
            let (store, ctx) = (store.clone(), ctx.clone());
            async move {
                let now = Utc::now();
                let t = Tenant {
                    id: ctx.tenants[i].clone(),
                    name: format!("bench-t{i:06}"),
                    display_name: format!("Bench tenant {i}"),
                    labels: BTreeMap::new(),
                    generation: 1,
                    created_at: now,
                    updated_at: now,
                };
                store.insert(&t, &audit("tenants.create")).await.map_err(|e| format!("tenant: {e}"))?;
                Ok(())
            }
        })
        .await?;
    }
    say(format!("setup: price book and {n} tenants in {:.1} s", t0.elapsed().as_secs_f64()));

    // The month's ledger: generated on a thread, written by `insert_tasks` tasks through
    // Store::insert_usage, at most a few chunks in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<UsageRecord>>(2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..a.insert_tasks {
        let (rx, store, batch) = (rx.clone(), store.clone(), a.batch);
        writers.push(tokio::spawn(async move {
            let mut rows = 0u64;
            loop {
                let chunk = rx.lock().await.recv().await;
                let Some(chunk) = chunk else { return Ok::<u64, String>(rows) };
                store.insert_usage(&chunk, batch).await.map_err(|e| format!("insert_usage: {e}"))?;
                rows += chunk.len() as u64;
            }
        }));
    }
    let gen_args = Args { url: None, pg_admin: None, pg_db: None, backend: a.backend.clone(), ..a };
    let gctx = ctx.clone();
    let generator = std::thread::spawn(move || {
        let r = generate(&gen_args, &gctx, |chunk| tx.blocking_send(chunk).map_err(|_| "the writers stopped".to_string()));
        (r, gen_args)
    });
    let mut inserted = 0u64;
    let mut write_err = None;
    for w in writers {
        match w.await.map_err(|e| e.to_string())? {
            Ok(r) => inserted += r,
            Err(e) => write_err = Some(e),
        }
    }
    let (generated, a) = generator.join().map_err(|_| "the generator panicked")?;
    if let Some(e) = write_err {
        return Err(e);
    }
    let made = generated?;
    let insert_s = t0.elapsed().as_secs_f64();
    if inserted != made.records {
        return Err(format!("generated {} records but inserted {inserted}", made.records));
    }
    let rss_insert = status_kib("VmHWM:");
    say(format!(
        "ledger: {} records ({:.1} per instance) inserted in {:.1} s = {:.0} rows/s (batch {}, {} records per call, {} writer task(s)); peak RSS so far {:.0} MiB",
        made.records,
        made.records as f64 / (n * a.instances) as f64,
        insert_s,
        made.records as f64 / insert_s,
        a.batch,
        a.chunk,
        a.insert_tasks,
        mib(rss_insert)
    ));

    // What autovacuum would have done by the end of a month on PostgreSQL (hint bits,
    // visibility map, statistics). Plinth runs no ANALYZE on SQLite, so neither does this.
    if postgres {
        let t0 = Instant::now();
        let mut c = AnyConnection::connect(&url).await.map_err(|e| e.to_string())?;
        c.execute("VACUUM ANALYZE usage_records").await.map_err(|e| format!("vacuum: {e}"))?;
        let size: i64 = sqlx::query("SELECT CAST(pg_total_relation_size('usage_records') AS BIGINT)")
            .fetch_one(&mut c)
            .await
            .map_err(|e| e.to_string())?
            .try_get(0)
            .map_err(|e| e.to_string())?;
        let _ = c.close().await;
        say(format!(
            "VACUUM ANALYZE usage_records: {:.1} s (untimed); usage_records with indexes {:.0} MiB",
            t0.elapsed().as_secs_f64(),
            size as f64 / 1048576.0
        ));
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        let size: u64 = ["", "-wal"].iter().filter_map(|s| std::fs::metadata(format!("{path}{s}")).ok()).map(|m| m.len()).sum();
        say(format!("SQLite database (with WAL) {:.0} MiB", size as f64 / 1048576.0));
    }

    // Baseline, first run.
    for line in baseline_plan(&url, postgres, &a.baseline, p0).await? {
        say(format!("  plan: {line}"));
    }
    let (base1_s, base) = baseline(&url, postgres, &a.baseline, p0).await?;
    say(format!("baseline (one SQL aggregation, form {}): {:.2} s, {} tenants", a.baseline, base1_s, base.len()));

    // The invoice run.
    let st = AppState::new(store.clone(), ServerConfig::default());
    let t0 = Instant::now();
    let invoices: Vec<(i64, u32)> = {
        let (st, ctx) = (st.clone(), ctx.clone());
        run_all(n, a.concurrency, move |i| {
            let (st, ctx) = (st.clone(), ctx.clone());
            async move {
                let inv = plinth_server::billing::invoice_for(&st, &ctx.tenants[i], &period)
                    .await
                    .map_err(|e| format!("invoice_for {}: {e:?}", ctx.tenants[i]))?;
                Ok((inv.total_micros, inv.lines.len() as u32))
            }
        })
        .await?
    };
    let invoice_s = t0.elapsed().as_secs_f64();
    let lines: u64 = invoices.iter().map(|i| u64::from(i.1)).sum();
    say(format!(
        "invoice run: {n} invoices ({lines} lines) in {:.2} s = {:.0} invoices/s, {:.0} records/s (concurrency {})",
        invoice_s,
        n as f64 / invoice_s,
        made.records as f64 / invoice_s,
        a.concurrency
    ));

    // Rating alone (reads + rating, no invoice write), when asked.
    let mut rate_s = None;
    if a.rate_pass {
        let t0 = Instant::now();
        let (st, ctx) = (st.clone(), ctx.clone());
        run_all(n, a.concurrency, move |i| {
            let (st, ctx) = (st.clone(), ctx.clone());
            async move {
                let at = period.end;
                let (rated, _) = plinth_server::billing::rate_as_of(&st, &ctx.tenants[i], &period, at)
                    .await
                    .map_err(|e| format!("rate_as_of: {e:?}"))?;
                Ok(rated.total_micros)
            }
        })
        .await?;
        let s = t0.elapsed().as_secs_f64();
        say(format!("rating only (rate_as_of, no invoice write): {s:.2} s"));
        rate_s = Some(s);
    }

    // Re-runs at other concurrencies (the drafts exist now: each call recomputes and saves).
    let mut sweep = Vec::new();
    for &c in &a.sweep {
        let t0 = Instant::now();
        let (st, ctx) = (st.clone(), ctx.clone());
        run_all(n, c, move |i| {
            let (st, ctx) = (st.clone(), ctx.clone());
            async move {
                let inv = plinth_server::billing::invoice_for(&st, &ctx.tenants[i], &period)
                    .await
                    .map_err(|e| format!("invoice_for: {e:?}"))?;
                Ok(inv.total_micros)
            }
        })
        .await?;
        let s = t0.elapsed().as_secs_f64();
        say(format!("invoice re-run at concurrency {c}: {s:.2} s = {:.0} invoices/s", n as f64 / s));
        sweep.push(json!({ "concurrency": c, "s": s }));
    }

    // Baseline again (after the invoice run); the ratio uses the faster of the two.
    let (base2_s, base2) = baseline(&url, postgres, &a.baseline, p0).await?;
    say(format!("baseline again: {:.2} s", base2_s));
    let base_s = base1_s.min(base2_s);

    // Every tenant: invoice total = baseline total = the generator's own sums.
    let mut diffs = Vec::new();
    let mut grand: i128 = 0;
    for i in 0..n {
        let tid = ctx.tenants[i].as_str();
        let want: i128 = (0..LINES).map(|l| line_amount(l, made.sums[i][l])).sum();
        grand += want;
        let inv = i128::from(invoices[i].0);
        let b1 = base.get(tid).copied().map(i128::from).unwrap_or(0);
        let b2 = base2.get(tid).copied().map(i128::from).unwrap_or(0);
        if inv != want || b1 != want || b2 != want {
            diffs.push(format!("{tid}: invoice {inv}, baseline {b1}/{b2}, generator {want}"));
        }
    }
    if base.len() > n || base2.len() > n {
        diffs.push(format!("baseline returned {} / {} tenants for {n}", base.len(), base2.len()));
    }
    let agree = diffs.is_empty();
    let rss = status_kib("VmHWM:");
    let ratio = invoice_s / base_s;
    say(format!(
        "totals: {} ({} tenants, Σ {} USD): invoices {} the SQL aggregation and the generator",
        if agree { "identical" } else { "DIFFERENT" },
        n,
        plinth_domain::rating::money::money(i64::try_from(grand).unwrap_or(i64::MAX)),
        if agree { "=" } else { "≠" },
    ));
    for d in diffs.iter().take(5) {
        say(format!("  differs: {d}"));
    }
    say(format!(
        "{}: invoice run {:.2} s vs one SQL aggregation {:.2} s = {:.1}x; peak RSS {:.0} MiB",
        a.backend,
        invoice_s,
        base_s,
        ratio,
        mib(rss)
    ));
    println!(
        "RESULT {}",
        json!({
            "backend": a.backend,
            "tenants": n,
            "instances": a.instances,
            "records": made.records,
            "insert_s": insert_s,
            "rows_per_s": made.records as f64 / insert_s,
            "invoice_s": invoice_s,
            "rate_only_s": rate_s,
            "sweep": sweep,
            "baseline_s": base_s,
            "baseline_runs_s": [base1_s, base2_s],
            "ratio": ratio,
            "concurrency": a.concurrency,
            "peak_rss_mib": mib(rss),
            "peak_rss_insert_mib": mib(rss_insert),
            "agree": agree,
            "differences": diffs.len(),
            "total_micros": grand.to_string(),
        })
    );
    store.close().await;
    if !agree {
        return Err(format!("{} tenants' totals differ", diffs.len()));
    }
    Ok(())
}
