//! The support tier: a `Purchase` line of a percentage of the usage subtotal (usage lines
//! only, not commitments), at least the tier's minimum, charged before credits.

use super::money::{money, round_div, to_i64};
use super::{MICROS, RatingError};
use chrono::{DateTime, Utc};
use plinth_api::{ChargeCategory, InvoiceLine, Rounding, SupportTier};

/// The support line: max(minimum, usage subtotal × basis points / 10 000 rounded half up).
pub(crate) fn line(
    tier: &SupportTier,
    usage_subtotal: i128,
    currency: &str,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> Result<InvoiceLine, RatingError> {
    let share = round_div(super::money::mul(usage_subtotal, tier.basis_points.into())?, 10_000, Rounding::HalfUp);
    let amount = to_i64(share.max(tier.minimum_micros.into()))?;
    let basis = tier.basis_points;
    Ok(InvoiceLine {
        number: 0,
        category: ChargeCategory::Purchase,
        meter: None,
        dimension: tier.name.clone(),
        description: format!(
            "support tier {}: {}.{:02} % of usage {} {currency}, at least {} {currency}",
            tier.name,
            basis / 100,
            (basis % 100).abs(),
            money(to_i64(usage_subtotal)?),
            money(tier.minimum_micros),
        ),
        resource_id: None,
        consumed_quantity_micros: MICROS as i64,
        consumed_unit: "period".to_string(),
        pricing_quantity_micros: MICROS as i64,
        pricing_unit: "period".to_string(),
        unit_price_micros: amount,
        amount_micros: amount,
        list_amount_micros: None,
        rounding: Rounding::HalfUp,
        price_book_id: None,
        record_ids: Vec::new(),
        commitment_id: None,
        credit_id: None,
        charge_class: None,
        charge_period_start: period.0,
        charge_period_end: period.1,
    })
}

#[cfg(test)]
mod tests {
    use crate::rating::fixtures::*;
    use crate::rating::{Rated, RatingInput, rate};
    use plinth_api::*;

    /// Usage of `hours` hours at 1.234567 USD/hour, a 1-unit commitment at 10 USD/hour for
    /// one hour, and the support tier.
    fn rate_with(hours: i64, tier: &SupportTier) -> Rated {
        let books = [book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 1_234_567, Rounding::HalfUp)])];
        let records = [
            rec(1, "ins_a", Meter::GpuSeconds, "h100", day(2), 3600, 1),
            rec(2, "ins_a", Meter::RunningSeconds, "c1", day(2), hours * 3600, 1),
        ];
        let cmts = [commitment("cmt_a", Meter::GpuSeconds, "h100", 1, day(2), at(2, 1), 10_000_000)];
        rate(&RatingInput { support: Some(tier), commitments: &cmts, ..input(&records, &books) }).unwrap()
    }

    #[test]
    fn the_percentage_applies_to_usage_only_with_a_minimum() {
        let tier = SupportTier { name: "business".into(), basis_points: 1000, minimum_micros: 5_000_000 };
        // 100 h × 1.234567 = 123.4567 USD usage → 10 % = 12.34567 → 12.345670; the 10 USD
        // commitment is not part of the base.
        let r = rate_with(100, &tier);
        let support = r.lines.iter().find(|l| l.dimension == "business").unwrap();
        assert_eq!(support.category, ChargeCategory::Purchase);
        assert_eq!(support.amount_micros, 12_345_670);
        assert_eq!(r.subtotal_micros, 123_456_700 + 10_000_000 + 12_345_670);
        assert!(support.description.contains("10.00 % of usage 123.456700 USD"), "{}", support.description);
        // 10 h → 12.34567 USD usage → 1.234567: below the 5 USD minimum.
        let r = rate_with(10, &tier);
        assert_eq!(r.lines.iter().find(|l| l.dimension == "business").unwrap().amount_micros, 5_000_000);
        // The support line comes after the commitment, before credits.
        assert_eq!(r.lines.last().unwrap().dimension, "business");
        assert_eq!(r.lines.last().unwrap().number as usize, r.lines.len());
    }

    #[test]
    fn the_percentage_rounds_half_up_once() {
        // 1 h × 1.234567 = 1.234567 USD; 2.5 % = 0.030864175 → 0.030864; 2.55 % = 0.03148145… → 0.031481.
        let tier = SupportTier { name: "dev".into(), basis_points: 250, minimum_micros: 0 };
        assert_eq!(rate_with(1, &tier).lines.last().unwrap().amount_micros, 30_864);
        let tier = SupportTier { name: "dev".into(), basis_points: 255, minimum_micros: 0 };
        assert_eq!(rate_with(1, &tier).lines.last().unwrap().amount_micros, 31_481);
        // 2 h → 2.469134 × 2.5 % = 0.06172835 → 0.061728; 4 h → 4.938268 × 2.5 % = 0.1234567 → 0.123457.
        let tier = SupportTier { name: "dev".into(), basis_points: 250, minimum_micros: 0 };
        assert_eq!(rate_with(2, &tier).lines.last().unwrap().amount_micros, 61_728);
        assert_eq!(rate_with(4, &tier).lines.last().unwrap().amount_micros, 123_457);
        // An exact tie: 50 % of 1.234567 = 0.6172835 → 0.617284.
        let tier = SupportTier { name: "dev".into(), basis_points: 5000, minimum_micros: 0 };
        assert_eq!(rate_with(1, &tier).lines.last().unwrap().amount_micros, 617_284);
    }
}
