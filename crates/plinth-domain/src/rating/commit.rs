//! Commitments: the purchase line a commitment bills for its overlap with the period, and
//! the usage it covers.
//!
//! Covered usage of a (meter, dimension) is ∫ min(Σ multiplier of its records open at t,
//! Σ count of its commitments in force at t) dt over the period, computed by a sweep over
//! record and commitment start/end events. At each instant the concurrent usage of the
//! lines (stacked in line order) and the commitments' counts (stacked by start, then id)
//! are laid side by side, and each (line, commitment) pair gets the overlap, so commitments
//! that stack never cover the same usage twice and line coverage is attributed exactly.

use super::money::{mul, round_div, to_i64};
use super::{Group, RatingError, subject};
use chrono::{DateTime, Utc};
use plinth_api::{ChargeCategory, Commitment, InvoiceLine, Meter, Rounding};

/// Microseconds per hour.
const HOUR_US: i128 = 3_600_000_000;

/// A commitment and its overlap [start, end) with the period.
pub(crate) struct Active<'a> {
    pub c: &'a Commitment,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The commitments overlapping `period`, ordered by start, then id.
pub(crate) fn active(commitments: &[Commitment], period: (DateTime<Utc>, DateTime<Utc>)) -> Vec<Active<'_>> {
    let mut v: Vec<Active> = commitments
        .iter()
        .map(|c| Active { c, start: c.start_at.max(period.0), end: c.end_at.min(period.1) })
        .filter(|a| a.start < a.end)
        .collect();
    v.sort_by(|a, b| a.c.start_at.cmp(&b.c.start_at).then(a.c.id.cmp(&b.c.id)));
    v
}

/// Fills each group's `covered` with what the matching commitments cover of it. Groups
/// must be in line order (those of one meter and dimension adjacent).
pub(crate) fn cover<'a>(groups: &mut [Group<'a>], active: &[Active<'a>]) -> Result<(), RatingError> {
    let mut i = 0;
    while i < groups.len() {
        let (meter, dim) = (groups[i].meter, groups[i].dimension);
        let j = i + groups[i..].iter().take_while(|g| g.meter == meter && g.dimension == dim).count();
        let cs: Vec<&Active<'a>> =
            active.iter().filter(|a| a.c.meter == meter && a.c.dimension == dim && meter.is_interval()).collect();
        if !cs.is_empty() {
            sweep(&mut groups[i..j], &cs)?;
        }
        i = j;
    }
    Ok(())
}

/// Who an event changes: a line's concurrent usage, or a commitment's count in force.
#[derive(Clone, Copy)]
enum Who {
    Line(usize),
    Commitment(usize),
}

/// The sweep over one meter and dimension's groups and commitments.
fn sweep<'a>(groups: &mut [Group<'a>], cs: &[&Active<'a>]) -> Result<(), RatingError> {
    let lo = cs.iter().map(|a| a.start).min().unwrap_or_default();
    let hi = cs.iter().map(|a| a.end).max().unwrap_or_default();
    let mut events: Vec<(DateTime<Utc>, Who, i128)> = Vec::new();
    for (j, g) in groups.iter().enumerate() {
        for r in &g.records {
            let Some(end) = r.end_at else { continue };
            let (s, e) = (r.start_at.max(lo), end.min(hi));
            if s < e {
                events.push((s, Who::Line(j), r.multiplier.into()));
                events.push((e, Who::Line(j), -i128::from(r.multiplier)));
            }
        }
    }
    for (k, a) in cs.iter().enumerate() {
        events.push((a.start, Who::Commitment(k), a.c.count.into()));
        events.push((a.end, Who::Commitment(k), -i128::from(a.c.count)));
    }
    events.sort_by_key(|e| e.0);

    let mut usage = vec![0i128; groups.len()];
    let mut counts = vec![0i128; cs.len()];
    let mut covered = vec![vec![0i128; cs.len()]; groups.len()];
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        while let Some(&(et, who, delta)) = events.get(i).filter(|e| e.0 == t) {
            debug_assert_eq!(et, t);
            match who {
                Who::Line(j) => usage[j] += delta,
                Who::Commitment(k) => counts[k] += delta,
            }
            i += 1;
        }
        let Some(&(next, _, _)) = events.get(i) else { break };
        let dt = i128::from((next - t).num_microseconds().ok_or(RatingError::Overflow)?);
        // Usage stacked [a, a + s) per line against counts stacked [b, b + c) per commitment.
        let mut a = 0i128;
        for (j, &s) in usage.iter().enumerate() {
            let s = s.max(0);
            let mut b = 0i128;
            for (k, &c) in counts.iter().enumerate() {
                let c = c.max(0);
                let overlap = (a + s).min(b + c) - a.max(b);
                if overlap > 0 {
                    covered[j][k] = super::money::add(covered[j][k], mul(overlap, dt)?)?;
                }
                b += c;
            }
            a += s;
        }
    }
    for (g, cov) in groups.iter_mut().zip(covered) {
        g.covered = cs.iter().zip(cov).filter(|(_, q)| *q > 0).map(|(a, q)| (a.c, q)).collect();
    }
    Ok(())
}

/// The purchase line of a commitment: count × overlap hours × hourly price, rounded half up.
pub(crate) fn purchase_line(a: &Active, groups: &[Group], currency: &str) -> Result<InvoiceLine, RatingError> {
    let c = a.c;
    let overlap_us = i128::from((a.end - a.start).num_microseconds().ok_or(RatingError::Overflow)?);
    // Unit-seconds in millionths (= count × microseconds).
    let reserved = mul(c.count.into(), overlap_us)?;
    let amount = round_div(mul(reserved, c.hourly_price_micros.into())?, HOUR_US, Rounding::HalfUp);
    let hours = round_div(reserved, 3600, Rounding::HalfUp);
    let used: i128 = groups.iter().flat_map(|g| &g.covered).filter(|(x, _)| x.id == c.id).map(|x| x.1).sum();
    let description = format!(
        "commitment {}: {} × {} for {} hours at {} {currency}/hour each; {} of {} hours used",
        c.id,
        c.count,
        subject(c.meter, &c.dimension),
        super::decimal(round_div(overlap_us, 3600, Rounding::HalfUp)),
        super::money::money(c.hourly_price_micros),
        super::decimal(round_div(used, 3600, Rounding::HalfUp)),
        super::decimal(hours),
    );
    Ok(InvoiceLine {
        number: 0,
        category: ChargeCategory::Purchase,
        meter: Some(Meter::ReservedSeconds),
        dimension: c.id.to_string(),
        description,
        resource_id: None,
        consumed_quantity_micros: to_i64(reserved)?,
        consumed_unit: Meter::ReservedSeconds.unit().to_string(),
        pricing_quantity_micros: to_i64(hours)?,
        pricing_unit: "hour".to_string(),
        unit_price_micros: c.hourly_price_micros,
        amount_micros: to_i64(amount)?,
        list_amount_micros: None,
        rounding: Rounding::HalfUp,
        price_book_id: None,
        record_ids: Vec::new(),
        commitment_id: Some(c.id.clone()),
        credit_id: None,
        charge_class: None,
        charge_period_start: a.start,
        charge_period_end: a.end,
    })
}

#[cfg(test)]
mod tests {
    use crate::rating::fixtures::*;
    use crate::rating::{RatingInput, rate};
    use plinth_api::*;

    const HOUR: i64 = 3600;
    /// 0.04 USD per hour of c1.small.
    const PRICE: i64 = 40_000;

    fn books() -> Vec<PriceBook> {
        vec![book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, PRICE, Rounding::HalfUp)])]
    }

    fn running(n: u32, res: &str, start: chrono::DateTime<chrono::Utc>, secs: i64) -> UsageRecord {
        rec(n, res, Meter::RunningSeconds, "c1.small", start, secs, 1)
    }

    fn rate_with(records: &[UsageRecord], commitments: &[Commitment]) -> crate::rating::Rated {
        let books = books();
        rate(&RatingInput { commitments, ..input(records, &books) }).unwrap()
    }

    #[test]
    fn a_commitment_covering_usage_exactly_leaves_nothing_to_bill() {
        let (start, end) = period();
        let records = [running(1, "ins_a", start, 30 * 24 * HOUR)];
        let cmts = [commitment("cmt_a", Meter::RunningSeconds, "c1.small", 1, start, end, 30_000)];
        let rated = rate_with(&records, &cmts);
        assert_eq!(rated.lines.len(), 2);
        let usage = &rated.lines[0];
        assert_eq!(usage.amount_micros, 0);
        assert_eq!(usage.pricing_quantity_micros, 0);
        assert_eq!(usage.consumed_quantity_micros, 30 * 24 * HOUR * 1_000_000);
        assert_eq!(usage.list_amount_micros, Some(720 * PRICE));
        assert!(usage.description.contains("720 hours covered by commitment cmt_a"), "{}", usage.description);
        let purchase = &rated.lines[1];
        assert_eq!(purchase.category, ChargeCategory::Purchase);
        assert_eq!(purchase.commitment_id.as_ref().map(|c| c.as_str()), Some("cmt_a"));
        assert_eq!(purchase.dimension, "cmt_a");
        assert_eq!(purchase.amount_micros, 720 * 30_000);
        assert_eq!(purchase.pricing_quantity_micros, 720_000_000);
        assert!(purchase.description.contains("720 of 720 hours used"), "{}", purchase.description);
        assert_eq!(rated.total_micros, 720 * 30_000);
    }

    #[test]
    fn usage_beyond_the_committed_count_is_billed() {
        // 2 committed, 3 concurrent for an hour: 1 hour billed as usage.
        let (start, end) = period();
        let t = at(3, 10);
        let records = [running(1, "ins_a", t, HOUR), running(2, "ins_b", t, HOUR), running(3, "ins_c", t, HOUR)];
        let cmts = [commitment("cmt_a", Meter::RunningSeconds, "c1.small", 2, start, end, 30_000)];
        let rated = rate_with(&records, &cmts);
        let usage = &rated.lines[0];
        assert_eq!(usage.pricing_quantity_micros, 1_000_000);
        assert_eq!(usage.amount_micros, PRICE);
        assert_eq!(usage.list_amount_micros, Some(3 * PRICE));
        assert!(usage.description.contains("2 hours covered by commitment cmt_a"), "{}", usage.description);
        assert_eq!(rated.lines[1].amount_micros, 2 * 720 * 30_000);
        assert_eq!(rated.subtotal_micros, PRICE + 2 * 720 * 30_000);
    }

    #[test]
    fn an_unused_commitment_is_billed_for_its_overlap_only() {
        // Starts mid-period (day 16 at noon), runs past the period: 14.5 days = 348 hours.
        let cmts = [commitment("cmt_a", Meter::GpuSeconds, "h100", 3, at(16, 12), day(40), 2_500_000)];
        let rated = rate_with(&[], &cmts);
        assert_eq!(rated.lines.len(), 1);
        let l = &rated.lines[0];
        assert_eq!(l.consumed_quantity_micros, 3 * 348 * HOUR * 1_000_000);
        assert_eq!(l.pricing_quantity_micros, 3 * 348 * 1_000_000);
        assert_eq!(l.amount_micros, 3 * 348 * 2_500_000);
        assert_eq!((l.charge_period_start, l.charge_period_end), (at(16, 12), day(31)));
        assert!(l.description.contains("0 of 1044 hours used"), "{}", l.description);
        // A commitment outside the period bills nothing.
        let past = [commitment("cmt_b", Meter::GpuSeconds, "h100", 3, day(1) - chrono::Duration::days(30), day(1), 1)];
        assert!(rate_with(&[], &past).lines.is_empty());
    }

    #[test]
    fn purchase_amount_rounds_half_up_once() {
        // 1 unit × 1 second at 1.8 micro-units per hour = 0.0005 → 1 (half up), over the
        // whole 720 hours it is exact.
        let cmts = [commitment(
            "cmt_a",
            Meter::RunningSeconds,
            "c1.small",
            1,
            day(1),
            day(1) + chrono::Duration::seconds(1),
            1_800,
        )];
        assert_eq!(rate_with(&[], &cmts).lines[0].amount_micros, 1);
        let cmts = [commitment(
            "cmt_a",
            Meter::RunningSeconds,
            "c1.small",
            1,
            day(1),
            day(1) + chrono::Duration::seconds(1),
            1_799,
        )];
        assert_eq!(rate_with(&[], &cmts).lines[0].amount_micros, 0);
    }

    #[test]
    fn coverage_counts_only_the_commitment_term_and_its_dimension() {
        // Usage 00:00-04:00 on day 3; the commitment starts at 02:00: 2 hours covered.
        let records = [
            running(1, "ins_a", at(3, 0), 4 * HOUR),
            rec(2, "ins_b", Meter::RunningSeconds, "c1.large", at(3, 0), 4 * HOUR, 1),
        ];
        let cmts = [commitment("cmt_a", Meter::RunningSeconds, "c1.small", 1, at(3, 2), day(31), 0)];
        let rated = rate_with(&records, &cmts);
        let large = rated.lines.iter().find(|l| l.dimension == "c1.large").unwrap();
        let small = rated.lines.iter().find(|l| l.dimension == "c1.small").unwrap();
        assert_eq!(large.amount_micros, 4 * PRICE);
        assert_eq!(large.list_amount_micros, None);
        assert_eq!(small.amount_micros, 2 * PRICE);
    }

    #[test]
    fn stacked_commitments_never_cover_the_same_usage_twice() {
        // Two commitments of 1 each and one instance: only 1 unit is covered at a time,
        // attributed to the earlier commitment; the second covers the overflow of a second
        // instance.
        let (start, end) = period();
        let records = [running(1, "ins_a", at(2, 0), 10 * HOUR), running(2, "ins_b", at(2, 5), 2 * HOUR)];
        let cmts = [
            commitment("cmt_b", Meter::RunningSeconds, "c1.small", 1, at(1, 1), end, 0),
            commitment("cmt_a", Meter::RunningSeconds, "c1.small", 1, start, end, 0),
        ];
        let rated = rate_with(&records, &cmts);
        let usage = &rated.lines[0];
        assert_eq!(usage.amount_micros, 0);
        assert!(
            usage.description.contains("10 hours covered by commitment cmt_a; 2 hours covered by commitment cmt_b"),
            "{}",
            usage.description
        );
        // Purchase lines come in start order: cmt_a, then cmt_b.
        assert_eq!(rated.lines[1].dimension, "cmt_a");
        assert_eq!(rated.lines[2].dimension, "cmt_b");
    }

    #[test]
    fn coverage_is_split_between_book_versions_without_double_counting() {
        // The book changes on day 15; one instance runs before and one after, each 1 hour,
        // and a commitment of 1 covers both.
        let books = vec![
            book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, PRICE, Rounding::HalfUp)]),
            book("pb_2", day(15), "USD", vec![flat(Meter::RunningSeconds, None, 2 * PRICE, Rounding::HalfUp)]),
        ];
        let records = [running(1, "ins_a", at(3, 0), HOUR), running(2, "ins_b", at(20, 0), 2 * HOUR)];
        let cmts = [commitment("cmt_a", Meter::RunningSeconds, "c1.small", 1, day(1), day(31), 0)];
        let rated = rate(&RatingInput { commitments: &cmts, ..input(&records, &books) }).unwrap();
        assert_eq!(rated.lines[0].price_book_id.as_ref().unwrap().0, "pb_1");
        assert_eq!(rated.lines[1].price_book_id.as_ref().unwrap().0, "pb_2");
        assert_eq!(rated.lines[0].amount_micros, 0);
        assert_eq!(rated.lines[1].amount_micros, 0);
        assert_eq!(rated.lines[1].list_amount_micros, Some(4 * PRICE));
    }
}
