//! Choosing a price for a usage record and pricing a quantity exactly.
//!
//! A record is rated by the price book version in effect when it started (the greatest
//! `effective_from <= start_at`), and inside that book by the price of its meter and
//! dimension, else the meter's wildcard price (`dimension: None`). Pricing returns an exact
//! rational ([`Exact`]); the caller rounds it once, per invoice line.

use super::RatingError;
use super::money::{MICROS, add, mul, round_div};
use chrono::{DateTime, Utc};
use plinth_api::{ChargeModel, Meter, Price, PriceBook, PriceTier, Rounding, UsageRecord};

/// The versions of one price book, ordered by `effective_from` (then version, then id).
pub struct Books<'a> {
    sorted: Vec<&'a PriceBook>,
}

impl<'a> Books<'a> {
    /// Orders `books` (any order) by when they take effect.
    pub fn new(books: &'a [PriceBook]) -> Self {
        let mut sorted: Vec<&PriceBook> = books.iter().collect();
        sorted.sort_by(|a, b| {
            a.effective_from.cmp(&b.effective_from).then(a.version.cmp(&b.version)).then(a.id.cmp(&b.id))
        });
        Books { sorted }
    }

    /// The version in effect at `at` (greatest `effective_from <= at`) and its position in
    /// effect order; `None` before the first version.
    pub fn at(&self, at: DateTime<Utc>) -> Option<(usize, &'a PriceBook)> {
        let n = self.sorted.partition_point(|b| b.effective_from <= at);
        n.checked_sub(1).map(|i| (i, self.sorted[i]))
    }
}

/// The price for `meter` and `dimension` in `book`: the dimension's own price, else the
/// meter's wildcard price, else `None` (unpriced).
pub fn choose_price<'a>(book: &'a PriceBook, meter: Meter, dimension: &str) -> Option<&'a Price> {
    let of_meter = || book.prices.iter().filter(move |p| p.meter == meter);
    of_meter()
        .find(|p| p.dimension.as_deref() == Some(dimension))
        .or_else(|| of_meter().find(|p| p.dimension.is_none()))
}

/// A record's metered quantity in millionths of its meter's unit. Interval records must
/// be closed; an interval without `quantity_micros` counts multiplier × its duration.
pub fn quantity_micros(record: &UsageRecord) -> Result<i64, RatingError> {
    let open = || RatingError::OpenRecord { record: record.id.clone() };
    if !record.meter.is_interval() {
        return record.quantity_micros.ok_or_else(open);
    }
    let end = record.end_at.ok_or_else(open)?;
    match record.quantity_micros {
        Some(q) => Ok(q),
        None => {
            let us = (end - record.start_at).num_microseconds().ok_or(RatingError::Overflow)?;
            record.multiplier.checked_mul(us).ok_or(RatingError::Overflow)
        }
    }
}

/// The quantity a record bills, in millionths of its meter's unit: an interval that begins
/// with a start (`first`) bills at least `min_seconds_per_start` seconds, i.e.
/// max(quantity, multiplier × min seconds × 1e6) (= multiplier × max(duration, minimum) for
/// a consistent record); anything else bills its quantity.
pub fn billable_micros(record: &UsageRecord, quantity: i64, price: Option<&Price>) -> i128 {
    let q = i128::from(quantity);
    match price {
        Some(p) if record.meter.is_interval() && record.first && p.min_seconds_per_start > 0 => {
            let floor = i128::from(record.multiplier) * i128::from(p.min_seconds_per_start) * MICROS;
            q.max(floor)
        }
        _ => q,
    }
}

/// An exact amount of money: `num / den` micro-units of currency (`den > 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exact {
    pub num: i128,
    pub den: i128,
}

impl Exact {
    /// The amount rounded to whole micro-units by `rule`.
    pub fn round(self, rule: Rounding) -> i128 {
        round_div(self.num, self.den, rule)
    }
}

/// What pricing a quantity gives: the exact amount and the unit price it was charged at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priced {
    pub amount: Exact,
    /// The flat price, or the first tier's (what an invoice line shows as its unit price).
    pub unit_price_micros: i64,
    /// The price of the tier a volume quantity fell in; otherwise `unit_price_micros`.
    pub applied_unit_price_micros: i64,
}

/// Prices `billed_micros` (millionths of the meter's unit) exactly. The quantity in pricing
/// units is billed_micros / (units_per_pricing_unit × 1e6). Tier bounds are in pricing
/// units, inclusive. A negative quantity (a correction) is priced at the first tier.
pub fn price_quantity(book: &PriceBook, price: &Price, billed_micros: i128) -> Result<Priced, RatingError> {
    let invalid =
        |reason: &'static str| RatingError::InvalidPrice { book: book.id.clone(), meter: price.meter, reason };
    if price.units_per_pricing_unit <= 0 {
        return Err(invalid("units_per_pricing_unit must be positive"));
    }
    let den = i128::from(price.units_per_pricing_unit) * MICROS;
    if price.model == ChargeModel::Flat {
        let num = mul(billed_micros, price.unit_price_micros.into())?;
        let p = price.unit_price_micros;
        return Ok(Priced { amount: Exact { num, den }, unit_price_micros: p, applied_unit_price_micros: p });
    }
    check_tiers(&price.tiers).map_err(invalid)?;
    let tiers = &price.tiers;
    let first = tiers[0].unit_price_micros;
    // Tier upper bound in millionths of the meter's unit (None: unbounded).
    let cap = |t: &PriceTier| t.up_to.map(|u| i128::from(u) * den);
    let (num, applied) = if billed_micros <= 0 {
        (mul(billed_micros, first.into())?, first)
    } else if price.model == ChargeModel::Volume {
        let tier = tiers.iter().find(|t| cap(t).is_none_or(|c| billed_micros <= c)).unwrap_or(&tiers[tiers.len() - 1]);
        (mul(billed_micros, tier.unit_price_micros.into())?, tier.unit_price_micros)
    } else {
        let (mut num, mut prev) = (0i128, 0i128);
        for t in tiers {
            let top = cap(t).map_or(billed_micros, |c| c.min(billed_micros));
            if top > prev {
                num = add(num, mul(top - prev, t.unit_price_micros.into())?)?;
                prev = top;
            }
            if prev >= billed_micros {
                break;
            }
        }
        (num, first)
    };
    Ok(Priced { amount: Exact { num, den }, unit_price_micros: first, applied_unit_price_micros: applied })
}

/// Tiers must be non-empty, with bounds non-negative and strictly ascending, and only the
/// last one open (`up_to: None`).
fn check_tiers(tiers: &[PriceTier]) -> Result<(), &'static str> {
    let Some((last, rest)) = tiers.split_last() else {
        return Err("a tiered price needs tiers");
    };
    if last.up_to.is_some() {
        return Err("the last tier must be open (up_to null)");
    }
    let mut prev = -1;
    for t in rest {
        match t.up_to {
            Some(u) if u > prev => prev = u,
            _ => return Err("tier bounds must be ascending, only the last one open"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::fixtures::*;

    #[test]
    fn the_book_in_effect_at_the_record_start_is_chosen() {
        let v1 = book("pb_v1", day(1), "USD", vec![]);
        let v2 = book("pb_v2", day(15), "USD", vec![]);
        let v0 = book("pb_v0", day(1) - chrono::Duration::days(60), "USD", vec![]);
        let all = [v2, v0, v1];
        let books = Books::new(&all);
        assert_eq!(books.at(day(1) - chrono::Duration::days(61)).map(|b| b.1.id.0.as_str()), None);
        assert_eq!(books.at(day(3)).unwrap().1.id.0, "pb_v1");
        assert_eq!(books.at(day(15)).unwrap().1.id.0, "pb_v2");
        assert_eq!(books.at(day(15) - chrono::Duration::microseconds(1)).unwrap().1.id.0, "pb_v1");
        assert_eq!(books.at(day(1) - chrono::Duration::days(1)).unwrap().1.id.0, "pb_v0");
    }

    #[test]
    fn the_dimension_price_wins_over_the_wildcard() {
        let b = book(
            "pb_1",
            day(1),
            "USD",
            vec![
                flat(Meter::RunningSeconds, None, 10, Rounding::HalfUp),
                flat(Meter::RunningSeconds, Some("c1.large"), 99, Rounding::HalfUp),
                flat(Meter::GpuSeconds, Some("h100"), 7, Rounding::HalfUp),
            ],
        );
        assert_eq!(choose_price(&b, Meter::RunningSeconds, "c1.large").unwrap().unit_price_micros, 99);
        assert_eq!(choose_price(&b, Meter::RunningSeconds, "c1.small").unwrap().unit_price_micros, 10);
        assert!(choose_price(&b, Meter::GpuSeconds, "a100").is_none());
        assert!(choose_price(&b, Meter::EgressBytes, "").is_none());
    }

    #[test]
    fn graduated_and_volume_differ_on_the_same_quantity() {
        // Tiers in GB: 0-100 at 0.10, 101-500 at 0.08, above at 0.05.
        let tiers = vec![tier(Some(100), 100_000), tier(Some(500), 80_000), tier(None, 50_000)];
        let mut p = tiered(Meter::EgressBytes, ChargeModel::Graduated, tiers, "GB", 1_000_000_000);
        let b = book("pb_1", day(1), "USD", vec![]);
        let gb = |n: i128| n * 1_000_000_000 * MICROS;
        // 750 GB graduated: 100 × 0.10 + 400 × 0.08 + 250 × 0.05 = 10 + 32 + 12.5 = 54.5.
        let g = price_quantity(&b, &p, gb(750)).unwrap();
        assert_eq!(g.amount.round(Rounding::HalfUp), 54_500_000);
        assert_eq!(g.unit_price_micros, 100_000);
        // Volume: 750 GB is in the last tier, all at 0.05 = 37.5.
        p.model = ChargeModel::Volume;
        let v = price_quantity(&b, &p, gb(750)).unwrap();
        assert_eq!(v.amount.round(Rounding::HalfUp), 37_500_000);
        assert_eq!(v.applied_unit_price_micros, 50_000);
        // Bounds are inclusive: exactly 100 GB is tier 1 for volume (10.0), and 100.5 GB is
        // tier 2 (100.5 × 0.08 = 8.04), while graduated gives 10 + 0.5 × 0.08 = 10.04.
        assert_eq!(price_quantity(&b, &p, gb(100)).unwrap().amount.round(Rounding::Down), 10_000_000);
        let half = gb(100) + 500_000_000 * MICROS;
        assert_eq!(price_quantity(&b, &p, half).unwrap().amount.round(Rounding::Down), 8_040_000);
        p.model = ChargeModel::Graduated;
        assert_eq!(price_quantity(&b, &p, half).unwrap().amount.round(Rounding::Down), 10_040_000);
        // Zero prices to zero either way.
        assert_eq!(price_quantity(&b, &p, 0).unwrap().amount.num, 0);
    }

    #[test]
    fn malformed_prices_are_refused_not_guessed() {
        let b = book("pb_1", day(1), "USD", vec![]);
        let mut p = flat(Meter::RunningSeconds, None, 10, Rounding::HalfUp);
        p.units_per_pricing_unit = 0;
        assert!(matches!(price_quantity(&b, &p, 1), Err(RatingError::InvalidPrice { .. })));
        let closed = tiered(Meter::EgressBytes, ChargeModel::Volume, vec![tier(Some(5), 1)], "GB", 1);
        assert!(price_quantity(&b, &closed, 1).is_err());
        let unsorted = tiered(
            Meter::EgressBytes,
            ChargeModel::Graduated,
            vec![tier(Some(5), 1), tier(Some(5), 1), tier(None, 1)],
            "GB",
            1,
        );
        assert!(price_quantity(&b, &unsorted, 1).is_err());
        let empty = tiered(Meter::EgressBytes, ChargeModel::Graduated, vec![], "GB", 1);
        assert!(price_quantity(&b, &empty, 1).is_err());
    }

    #[test]
    fn minimum_per_start_applies_to_first_intervals_only() {
        let mut p = flat(Meter::RunningSeconds, None, 36_000, Rounding::HalfUp);
        p.min_seconds_per_start = 60;
        let r = rec(1, "ins_a", Meter::RunningSeconds, "c1.small", day(2), 10, 1);
        let q = quantity_micros(&r).unwrap();
        assert_eq!(q, 10_000_000);
        assert_eq!(billable_micros(&r, q, Some(&p)), 60_000_000);
        let r2 = UsageRecord { multiplier: 2, quantity_micros: Some(20_000_000), ..r.clone() };
        assert_eq!(billable_micros(&r2, 20_000_000, Some(&p)), 120_000_000);
        let cont = UsageRecord { first: false, ..r.clone() };
        assert_eq!(billable_micros(&cont, q, Some(&p)), 10_000_000);
        let long = rec(2, "ins_a", Meter::RunningSeconds, "c1.small", day(2), 600, 1);
        assert_eq!(billable_micros(&long, 600_000_000, Some(&p)), 600_000_000);
        assert_eq!(billable_micros(&r, q, None), 10_000_000);
    }

    #[test]
    fn open_records_are_refused() {
        let mut r = rec(1, "ins_a", Meter::RunningSeconds, "c1.small", day(2), 10, 1);
        r.end_at = None;
        assert!(matches!(quantity_micros(&r), Err(RatingError::OpenRecord { .. })));
        let mut r = rec(1, "ins_a", Meter::RunningSeconds, "c1.small", day(2), 10, 3);
        r.quantity_micros = None;
        assert_eq!(quantity_micros(&r).unwrap(), 30_000_000);
    }
}
