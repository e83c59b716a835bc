//! Price estimates before anything exists: what an instance of a shape would cost per hour
//! and per month while it runs, under one price book version. Each line is a meter the
//! instance would record ([`crate::metering::sized_meters`]) priced by the invoice's own
//! rules ([`choose_price`], [`price_quantity`], the price's rounding): an hour's line is
//! what an invoice line of one hour would show. Volume and graduated tiers apply to the
//! month's quantity as they would on a month's invoice. A meter the book does not price is
//! listed as unpriced, never silently left out.

use super::RatingError;
use super::money::{MICROS, to_i64};
use super::price::{choose_price, price_quantity};
use crate::metering::sized_meters;
use plinth_api::{GpuRequest, Meter, PriceBook};

/// Hours in the month of an estimate (365 × 24 / 12, the convention of the big clouds).
pub const HOURS_PER_MONTH: i64 = 730;

/// One meter of an estimate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstimateLine {
    pub meter: Meter,
    pub dimension: String,
    pub multiplier: i64,
    /// `None`: the book has no price for this meter and dimension.
    pub hourly_micros: Option<i64>,
    pub monthly_micros: Option<i64>,
}

/// What running one instance of the given sizes costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub currency: String,
    pub lines: Vec<EstimateLine>,
    /// Sums of the priced lines.
    pub hourly_micros: i64,
    pub monthly_micros: i64,
}

/// Prices `seconds` of one meter line (rounded as the price says).
fn priced(
    book: &PriceBook,
    meter: Meter,
    dimension: &str,
    multiplier: i64,
    seconds: i64,
) -> Result<Option<i64>, RatingError> {
    let Some(price) = choose_price(book, meter, dimension) else { return Ok(None) };
    let billed = i128::from(multiplier) * i128::from(seconds) * MICROS;
    let p = price_quantity(book, price, billed)?;
    Ok(Some(to_i64(p.amount.round(price.rounding))?))
}

/// Estimates a running instance of `shape` (its disk and GPUs) under `book`.
pub fn running_instance(
    book: &PriceBook,
    shape: &str,
    disk_gib: u64,
    gpu: Option<&GpuRequest>,
) -> Result<Estimate, RatingError> {
    let mut lines = Vec::new();
    let (mut hourly, mut monthly) = (0i64, 0i64);
    for (meter, dimension, multiplier) in sized_meters(shape, disk_gib, gpu, true) {
        let h = priced(book, meter, &dimension, multiplier, 3600)?;
        let m = priced(book, meter, &dimension, multiplier, 3600 * HOURS_PER_MONTH)?;
        hourly = hourly.checked_add(h.unwrap_or(0)).ok_or(RatingError::Overflow)?;
        monthly = monthly.checked_add(m.unwrap_or(0)).ok_or(RatingError::Overflow)?;
        lines.push(EstimateLine { meter, dimension, multiplier, hourly_micros: h, monthly_micros: m });
    }
    Ok(Estimate { currency: book.currency.clone(), lines, hourly_micros: hourly, monthly_micros: monthly })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::fixtures::{book, day, flat, tier, tiered};
    use plinth_api::{ChargeModel, Rounding};

    #[test]
    fn an_estimate_prices_what_would_be_metered_by_the_books_rules() {
        let mut disk = flat(Meter::DiskGibSeconds, None, 0, Rounding::HalfUp);
        // 0.10 per GiB-month of 2,592,000 s.
        disk.pricing_unit = "GiB-month".into();
        disk.units_per_pricing_unit = 2_592_000;
        disk.unit_price_micros = 100_000;
        let b = book(
            "pb_1",
            day(1),
            "EUR",
            vec![
                flat(Meter::RunningSeconds, Some("c1"), 10_000, Rounding::HalfUp),
                flat(Meter::AllocatedSeconds, None, 2_000, Rounding::HalfUp),
                disk,
            ],
        );
        let gpu = GpuRequest { class: "h100".into(), count: 2 };
        let e = running_instance(&b, "c1", 20, Some(&gpu)).unwrap();
        assert_eq!(e.currency, "EUR");
        let hourly: Vec<(Meter, Option<i64>)> = e.lines.iter().map(|l| (l.meter, l.hourly_micros)).collect();
        // 20 GiB for an hour: 20 × 3600 / 2,592,000 × 0.10 = 0.002777… → 2,778 µ (half up).
        assert_eq!(
            hourly,
            vec![
                (Meter::AllocatedSeconds, Some(2_000)),
                (Meter::GpuSeconds, None),
                (Meter::DiskGibSeconds, Some(2_778)),
                (Meter::RunningSeconds, Some(10_000)),
            ],
            "the GPUs are unpriced in this book, and listed as such"
        );
        assert_eq!(e.hourly_micros, 2_000 + 2_778 + 10_000);
        // A month is priced as a month's line (20 GiB × 730 h), not 730 rounded hours.
        let disk_month = e.lines[2].monthly_micros.unwrap();
        assert_eq!(disk_month, 2_027_778, "20 × 730 × 3600 / 2,592,000 × 0.10 = 2.027777…");
        assert_eq!(e.monthly_micros, 2_000 * 730 + 2_027_778 + 10_000 * 730);
    }

    #[test]
    fn a_volume_tier_applies_to_the_months_quantity() {
        // 0.01 per hour up to 100 hours, 0.005 beyond (volume: the whole quantity at the tier reached).
        let p = tiered(
            Meter::RunningSeconds,
            ChargeModel::Volume,
            vec![tier(Some(100), 10_000), tier(None, 5_000)],
            "hour",
            3600,
        );
        let b = book("pb_1", day(1), "USD", vec![p]);
        let e = running_instance(&b, "c1", 0, None).unwrap();
        let run = e.lines.iter().find(|l| l.meter == Meter::RunningSeconds).unwrap();
        assert_eq!((run.hourly_micros, run.monthly_micros), (Some(10_000), Some(730 * 5_000)));
        assert_eq!(e.lines.len(), 2, "no disk line for a shape without a disk");
    }
}
