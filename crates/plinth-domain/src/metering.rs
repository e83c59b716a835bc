//! Metering: the usage intervals an instance's lifecycle facts keep open, the ledger
//! changes one transition makes (closing, opening, and splitting at billing-period
//! cut-offs so no record crosses a period), billing periods, counter deltas, and the replay
//! of an instance's event history into seconds per meter that the reconciliation report
//! compares with the ledger.
//!
//! Times here are microseconds since the epoch, as the ledger stores them.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use plinth_api::{GpuRequest, Instance, InstanceEvent, InstanceState, Lifecycle, Meter};
use std::collections::BTreeMap;

/// The volume class of boot disks (local to the host).
pub const BOOT_DISK_CLASS: &str = "local";

/// Microseconds since the epoch.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The instant of `us` microseconds since the epoch.
pub fn at_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// `t` cut to whole microseconds (what the ledger and the event history both keep).
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    at_micros(micros(t))
}

/// A billing period: [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

fn anchor_in(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).single().unwrap_or_default()
}

fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 { (year + 1, 1) } else { (year, month + 1) }
}

/// The monthly period holding `t`, starting at 00:00 UTC on `anchor_day` (1–28) of a month.
pub fn period_of(t: DateTime<Utc>, anchor_day: u32) -> Period {
    let day = anchor_day.clamp(1, 28);
    let (mut y, mut m) = (t.year(), t.month());
    if t.day() < day {
        (y, m) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
    }
    let (ny, nm) = next_month(y, m);
    Period { start: anchor_in(y, m, day), end: anchor_in(ny, nm, day) }
}

/// Parses `2026-11` (the period starting on the anchor day of that month) or an RFC 3339
/// instant (the period holding it).
pub fn parse_period(s: &str, anchor_day: u32) -> Option<Period> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(period_of(t.with_timezone(&Utc), anchor_day));
    }
    let (y, m) = s.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) || !(1970..=9999).contains(&y) {
        return None;
    }
    Some(period_of(anchor_in(y, m, anchor_day.clamp(1, 28)), anchor_day))
}

/// An interval that should be open for a resource: its meter and what it is priced by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub meter: Meter,
    pub dimension: String,
    pub multiplier: i64,
    pub attributes: BTreeMap<String, String>,
}

/// Whether an instance in `state` counts as running for billing: `running`, and
/// `rebooting` (a reboot stays running, as on EC2). `unknown` (its host stopped reporting)
/// is not billed as running.
pub fn bills_running(state: InstanceState) -> bool {
    matches!(state, InstanceState::Running | InstanceState::Rebooting)
}

/// Whether the instance holds a claim on a host (is allocated).
pub fn is_allocated(inst: &Instance) -> bool {
    inst.claim.is_some() && inst.host_id.is_some() && inst.lifecycle != Lifecycle::Deleted
}

/// The intervals an instance's current facts keep open: allocated seconds by shape, GPU
/// seconds by class and boot-disk GiB seconds while it holds a claim; running seconds by
/// shape while it runs.
pub fn instance_wants(inst: &Instance) -> Vec<Want> {
    let mut out = Vec::new();
    if !is_allocated(inst) {
        return out;
    }
    let mut attrs = BTreeMap::new();
    attrs.insert("shape".to_string(), inst.shape_name.clone());
    attrs.insert("runtime_class".to_string(), format!("{:?}", inst.runtime_class).to_lowercase());
    if let Some(h) = &inst.host_id {
        attrs.insert("host".to_string(), h.to_string());
    }
    if let Some(g) = &inst.gpu {
        attrs.insert("gpu_class".to_string(), g.class.clone());
    }
    if let Some(c) = &inst.claim {
        if c.tcg {
            attrs.insert("accelerator".to_string(), "tcg".to_string());
        }
        if let Some(r) = &c.rack_id {
            attrs.insert("rack".to_string(), r.clone());
        }
    }
    let sizes = sized_meters(&inst.shape_name, inst.disk_gib, inst.gpu.as_ref(), bills_running(inst.state));
    for (meter, dimension, multiplier) in sizes {
        out.push(Want { meter, dimension, multiplier, attributes: attrs.clone() });
    }
    out
}

/// The interval meters an allocated instance of these sizes records, as (meter, dimension,
/// multiplier): its shape while allocated, its GPUs by class, its boot disk by the GiB,
/// and its shape while running when `running`. Metering and price estimates share it, so
/// an estimate prices exactly what would be metered.
pub fn sized_meters(shape: &str, disk_gib: u64, gpu: Option<&GpuRequest>, running: bool) -> Vec<(Meter, String, i64)> {
    let mut out = vec![(Meter::AllocatedSeconds, shape.to_string(), 1)];
    if let Some(g) = gpu.filter(|g| g.count > 0) {
        out.push((Meter::GpuSeconds, g.class.clone(), i64::from(g.count)));
    }
    if disk_gib > 0 {
        out.push((Meter::DiskGibSeconds, BOOT_DISK_CLASS.to_string(), disk_gib as i64));
    }
    if running {
        out.push((Meter::RunningSeconds, shape.to_string(), 1));
    }
    out
}

/// An open interval as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenInterval {
    pub id: String,
    pub meter: Meter,
    pub dimension: String,
    pub multiplier: i64,
    pub attributes: BTreeMap<String, String>,
    pub start_at: i64,
    pub period_start: i64,
    pub first: bool,
}

impl OpenInterval {
    fn matches(&self, w: &Want) -> bool {
        self.meter == w.meter
            && self.dimension == w.dimension
            && self.multiplier == w.multiplier
            && self.attributes == w.attributes
    }
}

/// A record to insert: open when `end_at` is None.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInterval {
    pub meter: Meter,
    pub dimension: String,
    pub multiplier: i64,
    pub attributes: BTreeMap<String, String>,
    pub start_at: i64,
    pub end_at: Option<i64>,
    pub first: bool,
    pub period_start: i64,
}

impl NewInterval {
    /// Millionths of the unit: multiplier × microseconds (None while open).
    pub fn quantity(&self) -> Option<i64> {
        self.end_at.map(|e| self.multiplier.saturating_mul(e - self.start_at))
    }
}

/// What one transition does to the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerPlan {
    /// (open record id, end, quantity).
    pub close: Vec<(String, i64, i64)>,
    pub insert: Vec<NewInterval>,
}

impl LedgerPlan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.close.is_empty() && self.insert.is_empty()
    }
}

/// Period starts strictly after `from` up to and including `to`.
fn cutoffs(from_period_start: i64, to: i64, anchor_day: u32) -> Vec<i64> {
    let mut out = Vec::new();
    let mut p = period_of(at_micros(from_period_start), anchor_day);
    while micros(p.end) <= to {
        out.push(micros(p.end));
        p = period_of(p.end, anchor_day);
    }
    out
}

/// The ledger changes that take a resource from its `open` intervals to the `want`ed ones
/// at `at`: intervals no longer wanted close at `at`; wanted ones without an open interval
/// open at `at` (a first start unless an interval of the same meter was open, e.g. the
/// resource moved host); an open interval that began in an earlier period is closed at the
/// cut-off, with a record per whole period between, so no record crosses a period.
pub fn plan(open: &[OpenInterval], want: &[Want], at: i64, anchor_day: u32) -> LedgerPlan {
    let mut out = LedgerPlan::default();
    for o in open {
        let keep = want.iter().any(|w| o.matches(w));
        let cuts = cutoffs(o.period_start, at, anchor_day);
        let piece = |start: i64, end: Option<i64>, period_start: i64| NewInterval {
            meter: o.meter,
            dimension: o.dimension.clone(),
            multiplier: o.multiplier,
            attributes: o.attributes.clone(),
            start_at: start,
            end_at: end,
            first: false,
            period_start,
        };
        match cuts.split_first() {
            None if keep => {}
            None => out.close.push((o.id.clone(), at, o.multiplier.saturating_mul(at - o.start_at))),
            Some((first_cut, later)) => {
                out.close.push((o.id.clone(), *first_cut, o.multiplier.saturating_mul(first_cut - o.start_at)));
                let mut from = *first_cut;
                for c in later {
                    out.insert.push(piece(from, Some(*c), from));
                    from = *c;
                }
                if keep {
                    out.insert.push(piece(from, None, from));
                } else if from < at {
                    out.insert.push(piece(from, Some(at), from));
                }
            }
        }
    }
    for w in want {
        if open.iter().any(|o| o.matches(w)) {
            continue;
        }
        let continued = open.iter().any(|o| o.meter == w.meter);
        out.insert.push(NewInterval {
            meter: w.meter,
            dimension: w.dimension.clone(),
            multiplier: w.multiplier,
            attributes: w.attributes.clone(),
            start_at: at,
            end_at: None,
            first: !continued,
            period_start: micros(period_of(at_micros(at), anchor_day).start),
        });
    }
    out
}

/// The keep-everything plan at `at`: splits open intervals at period cut-offs and changes
/// nothing else (the period cut-off reconciler).
pub fn split_plan(open: &[OpenInterval], at: i64, anchor_day: u32) -> LedgerPlan {
    let want: Vec<Want> = open
        .iter()
        .map(|o| Want {
            meter: o.meter,
            dimension: o.dimension.clone(),
            multiplier: o.multiplier,
            attributes: o.attributes.clone(),
        })
        .collect();
    plan(open, &want, at, anchor_day)
}

/// The reserved-capacity records of a commitment's term: `count` units of `dimension` over
/// [start, end), one closed record per billing period it spans.
pub fn term_records(dimension: &str, count: i64, start: i64, end: i64, anchor_day: u32) -> Vec<NewInterval> {
    let mut out = Vec::new();
    let mut from = start;
    while from < end {
        let p = period_of(at_micros(from), anchor_day);
        let to = micros(p.end).min(end);
        out.push(NewInterval {
            meter: Meter::ReservedSeconds,
            dimension: dimension.to_string(),
            multiplier: count,
            attributes: BTreeMap::new(),
            start_at: from,
            end_at: Some(to),
            first: from == start,
            period_start: micros(p.start),
        });
        from = to;
    }
    out
}

/// The delta a counter sample adds: the growth since the last value, or the whole value
/// when the counter went down (it was reset).
pub fn counter_delta(last: Option<i64>, value: i64) -> i64 {
    match last {
        Some(l) if value >= l => value - l,
        _ => value.max(0),
    }
}

/// Seconds per (meter, dimension) derived from an instance's event history alone, inside
/// [from, to): allocated while an event says it holds a claim, running while it says it
/// runs. Microseconds, like the ledger's quantities before the multiplier.
pub fn replay(events: &[InstanceEvent], from: i64, to: i64) -> BTreeMap<(Meter, String), i64> {
    let mut evs: Vec<&InstanceEvent> = events.iter().filter(|e| e.placed.is_some()).collect();
    evs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    let mut out: BTreeMap<(Meter, String), i64> = BTreeMap::new();
    let mut add = |meter: Meter, shape: &str, a: i64, b: i64| {
        let (a, b) = (a.max(from), b.min(to));
        if b > a {
            *out.entry((meter, shape.to_string())).or_default() += b - a;
        }
    };
    for (i, e) in evs.iter().enumerate() {
        let start = micros(e.created_at);
        let end = evs.get(i + 1).map(|n| micros(n.created_at)).unwrap_or(to);
        let shape = e.shape.as_deref().unwrap_or("");
        if e.placed == Some(true) {
            add(Meter::AllocatedSeconds, shape, start, end);
            if e.state.is_some_and(bills_running) {
                add(Meter::RunningSeconds, shape, start, end);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        micros(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    #[test]
    fn periods_start_on_the_anchor_day() {
        let p = period_of(at_micros(t("2026-11-24T13:00:00Z")), 1);
        assert_eq!(micros(p.start), t("2026-11-01T00:00:00Z"));
        assert_eq!(micros(p.end), t("2026-12-01T00:00:00Z"));
        let p = period_of(at_micros(t("2026-12-10T00:00:00Z")), 15);
        assert_eq!(micros(p.start), t("2026-11-15T00:00:00Z"));
        assert_eq!(micros(p.end), t("2026-12-15T00:00:00Z"));
        let p = period_of(at_micros(t("2027-01-03T00:00:00Z")), 5);
        assert_eq!(micros(p.start), t("2026-12-05T00:00:00Z"));
        assert_eq!(parse_period("2026-11", 1).unwrap().start, at_micros(t("2026-11-01T00:00:00Z")));
        assert!(parse_period("2026-13", 1).is_none());
    }

    fn want(meter: Meter, host: &str) -> Want {
        Want {
            meter,
            dimension: "c1".into(),
            multiplier: 1,
            attributes: [("host".to_string(), host.to_string())].into_iter().collect(),
        }
    }

    /// The ledger's view of a record still open.
    fn as_open(id: &str, n: &NewInterval) -> OpenInterval {
        OpenInterval {
            id: id.into(),
            meter: n.meter,
            dimension: n.dimension.clone(),
            multiplier: n.multiplier,
            attributes: n.attributes.clone(),
            start_at: n.start_at,
            period_start: n.period_start,
            first: n.first,
        }
    }

    fn opened(plan: &LedgerPlan, id: &str) -> Vec<OpenInterval> {
        plan.insert.iter().filter(|n| n.end_at.is_none()).map(|n| as_open(id, n)).collect()
    }

    #[test]
    fn an_interval_across_two_cutoffs_is_split_per_period() {
        let start = t("2026-10-31T23:00:00Z");
        let p1 = plan(&[], &[want(Meter::RunningSeconds, "h1")], start, 1);
        assert_eq!(p1.insert.len(), 1);
        assert!(p1.insert[0].first);
        let open = opened(&p1, "use_1");
        let end = t("2026-12-01T00:30:00Z");
        let p2 = plan(&open, &[], end, 1);
        assert_eq!(p2.close, vec![("use_1".to_string(), t("2026-11-01T00:00:00Z"), 3_600_000_000)]);
        assert_eq!(p2.insert.len(), 2);
        assert_eq!(
            (p2.insert[0].start_at, p2.insert[0].end_at),
            (t("2026-11-01T00:00:00Z"), Some(t("2026-12-01T00:00:00Z")))
        );
        assert_eq!((p2.insert[1].start_at, p2.insert[1].end_at), (t("2026-12-01T00:00:00Z"), Some(end)));
        assert!(p2.insert.iter().all(|n| !n.first && n.period_start == n.start_at));
        let total: i64 =
            p2.close.iter().map(|c| c.2).sum::<i64>() + p2.insert.iter().filter_map(|n| n.quantity()).sum::<i64>();
        assert_eq!(total, end - start);
    }

    #[test]
    fn a_move_continues_and_a_kept_interval_is_untouched() {
        let p1 = plan(&[], &[want(Meter::AllocatedSeconds, "h1")], t("2026-11-02T00:00:00Z"), 1);
        let open = opened(&p1, "use_1");
        assert!(plan(&open, &[want(Meter::AllocatedSeconds, "h1")], t("2026-11-03T00:00:00Z"), 1).is_empty());
        let p2 = plan(&open, &[want(Meter::AllocatedSeconds, "h2")], t("2026-11-03T00:00:00Z"), 1);
        assert_eq!(p2.close.len(), 1);
        assert_eq!(p2.insert.len(), 1);
        assert!(!p2.insert[0].first, "a move is not a new start: no second minimum charge");
        // A kept interval that crossed a cut-off continues from it.
        let p3 = split_plan(&open, t("2026-12-05T00:00:00Z"), 1);
        assert_eq!(p3.close[0].1, t("2026-12-01T00:00:00Z"));
        assert_eq!(p3.insert.len(), 1);
        assert_eq!(p3.insert[0].end_at, None);
        assert_eq!(p3.insert[0].start_at, t("2026-12-01T00:00:00Z"));
    }

    /// A ledger driven by random wants at random times: per meter, records never overlap,
    /// never cross a period, and add up to exactly the time the meter was wanted.
    mod model {
        use super::*;
        use proptest::prelude::*;

        fn apply(ledger: &mut Vec<(String, NewInterval)>, plan: &LedgerPlan, next_id: &mut u32) {
            for (id, end, q) in &plan.close {
                let r = ledger.iter_mut().find(|(i, _)| i == id).expect("closes a known record");
                assert!(r.1.end_at.is_none(), "a record is closed once");
                assert_eq!(*q, r.1.multiplier * (end - r.1.start_at));
                r.1.end_at = Some(*end);
            }
            for n in &plan.insert {
                *next_id += 1;
                ledger.push((format!("use_{next_id}"), n.clone()));
            }
        }

        fn open_of(ledger: &[(String, NewInterval)]) -> Vec<OpenInterval> {
            ledger.iter().filter(|(_, n)| n.end_at.is_none()).map(|(id, n)| as_open(id, n)).collect()
        }

        proptest! {
            #[test]
            fn wanted_time_is_metered_exactly(
                steps in prop::collection::vec((0i64..40 * 86_400_000_000, 0u8..8, any::<bool>()), 1..40),
            ) {
                let mut now = t("2026-10-20T00:00:00Z");
                let mut ledger = Vec::new();
                let mut next_id = 0;
                let mut wanted_us: BTreeMap<Meter, i64> = BTreeMap::new();
                let mut current: Vec<Want> = Vec::new();
                for (dt, mask, split) in steps {
                    let at = now + dt;
                    for w in &current {
                        *wanted_us.entry(w.meter).or_default() += at - now;
                    }
                    if split {
                        let p = split_plan(&open_of(&ledger), at, 1);
                        apply(&mut ledger, &p, &mut next_id);
                    }
                    let host = if mask & 4 != 0 { "h2" } else { "h1" };
                    current = [(1, Meter::AllocatedSeconds), (2, Meter::RunningSeconds)]
                        .into_iter()
                        .filter(|(bit, _)| mask & bit != 0)
                        .map(|(_, m)| want(m, host))
                        .collect();
                    let p = plan(&open_of(&ledger), &current, at, 1);
                    apply(&mut ledger, &p, &mut next_id);
                    now = at;
                }
                let end = now + 1;
                for w in &current {
                    *wanted_us.entry(w.meter).or_default() += end - now;
                }
                let last = plan(&open_of(&ledger), &[], end, 1);
                apply(&mut ledger, &last, &mut next_id);
                for meter in [Meter::AllocatedSeconds, Meter::RunningSeconds] {
                    let mut recs: Vec<&NewInterval> = ledger.iter().map(|(_, n)| n).filter(|n| n.meter == meter).collect();
                    recs.sort_by_key(|n| n.start_at);
                    for pair in recs.windows(2) {
                        prop_assert!(pair[0].end_at.unwrap() <= pair[1].start_at, "overlap: {pair:?}");
                    }
                    for r in &recs {
                        let p = period_of(at_micros(r.start_at), 1);
                        prop_assert_eq!(r.period_start, micros(p.start));
                        prop_assert!(r.end_at.unwrap() <= micros(p.end), "crosses a cut-off: {r:?}");
                    }
                    let metered: i64 = recs.iter().map(|r| r.end_at.unwrap() - r.start_at).sum();
                    prop_assert_eq!(metered, wanted_us.get(&meter).copied().unwrap_or(0));
                }
            }
        }
    }

    #[test]
    fn a_commitment_term_is_one_record_per_period() {
        let r = term_records("c1", 3, t("2026-10-15T00:00:00Z"), t("2026-12-10T00:00:00Z"), 1);
        let spans: Vec<(i64, Option<i64>)> = r.iter().map(|n| (n.start_at, n.end_at)).collect();
        assert_eq!(
            spans,
            vec![
                (t("2026-10-15T00:00:00Z"), Some(t("2026-11-01T00:00:00Z"))),
                (t("2026-11-01T00:00:00Z"), Some(t("2026-12-01T00:00:00Z"))),
                (t("2026-12-01T00:00:00Z"), Some(t("2026-12-10T00:00:00Z"))),
            ]
        );
        assert!(r[0].first && !r[1].first);
        assert_eq!(r[1].quantity(), Some(3 * (t("2026-12-01T00:00:00Z") - t("2026-11-01T00:00:00Z"))));
    }

    #[test]
    fn counters_handle_resets() {
        assert_eq!(counter_delta(None, 500), 500);
        assert_eq!(counter_delta(Some(500), 800), 300);
        assert_eq!(counter_delta(Some(800), 100), 100);
    }
}
