//! Test builders for the rating engine: records, prices, books, grants, commitments and an
//! invoice around a [`Rated`], over the period November 2026.

use super::{Rated, RatingInput};
use chrono::{DateTime, Duration, TimeZone, Utc};
use plinth_api::*;
use std::collections::BTreeMap;

/// Midnight UTC of `n` November 2026 (`day(31)` is 1 December).
pub fn day(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::days(i64::from(n) - 1)
}

/// `h` hours after `day(n)`.
pub fn at(n: u32, h: i64) -> DateTime<Utc> {
    day(n) + Duration::hours(h)
}

/// The billing period: November 2026.
pub fn period() -> (DateTime<Utc>, DateTime<Utc>) {
    (day(1), day(31))
}

/// A closed interval record of `secs` seconds from `start`, `first`, with `multiplier`.
pub fn rec(n: u32, resource: &str, meter: Meter, dim: &str, start: DateTime<Utc>, secs: i64, mult: i64) -> UsageRecord {
    rec_us(n, resource, meter, dim, start, secs * 1_000_000, mult)
}

/// Like [`rec`], with the duration in microseconds.
pub fn rec_us(
    n: u32,
    resource: &str,
    meter: Meter,
    dim: &str,
    start: DateTime<Utc>,
    us: i64,
    mult: i64,
) -> UsageRecord {
    let mut attributes = BTreeMap::new();
    attributes.insert("shape".to_string(), dim.to_string());
    attributes.insert("host".to_string(), "hst_one".to_string());
    UsageRecord {
        id: UsageRecordId(format!("use_{n:06}")),
        tenant_id: TenantId("tnt_t".into()),
        project_id: ProjectId(format!("prj_{}", resource.len() % 2)),
        resource_id: resource.to_string(),
        resource_kind: "instance".into(),
        meter,
        dimension: dim.to_string(),
        unit: meter.unit().into(),
        start_at: start,
        end_at: Some(start + Duration::microseconds(us)),
        multiplier: mult,
        quantity_micros: Some(mult * us),
        first: true,
        period_start: day(1),
        attributes,
        cause: "evt_x".into(),
        created_at: start,
    }
}

/// A flat price per hour (3600 seconds) of `meter`.
pub fn flat(meter: Meter, dim: Option<&str>, per_hour_micros: i64, rounding: Rounding) -> Price {
    Price {
        meter,
        dimension: dim.map(str::to_string),
        model: ChargeModel::Flat,
        pricing_unit: "hour".into(),
        units_per_pricing_unit: 3600,
        unit_price_micros: per_hour_micros,
        tiers: vec![],
        min_seconds_per_start: 0,
        rounding,
    }
}

/// A tiered price (rounding half up).
pub fn tiered(meter: Meter, model: ChargeModel, tiers: Vec<PriceTier>, unit: &str, upp: i64) -> Price {
    Price {
        meter,
        dimension: None,
        model,
        pricing_unit: unit.into(),
        units_per_pricing_unit: upp,
        unit_price_micros: 0,
        tiers,
        min_seconds_per_start: 0,
        rounding: Rounding::HalfUp,
    }
}

/// One tier.
pub fn tier(up_to: Option<i64>, unit_price_micros: i64) -> PriceTier {
    PriceTier { up_to, unit_price_micros }
}

/// A price book version.
pub fn book(id: &str, from: DateTime<Utc>, currency: &str, prices: Vec<Price>) -> PriceBook {
    PriceBook {
        id: PriceBookId(id.into()),
        name: "default".into(),
        version: 1,
        currency: currency.into(),
        effective_from: from,
        prices,
        generation: 1,
        created_at: from,
        updated_at: from,
    }
}

/// A credit grant effective before the period, never expiring.
pub fn grant(id: &str, amount: i64, used: i64, priority: i32) -> CreditGrant {
    CreditGrant {
        id: CreditId(id.into()),
        tenant_id: TenantId("tnt_t".into()),
        description: format!("grant {id}"),
        amount_micros: amount,
        used_micros: used,
        currency: "USD".into(),
        priority,
        effective_at: day(1) - Duration::days(10),
        expires_at: None,
        generation: 1,
        created_at: day(1) - Duration::days(10),
        updated_at: day(1) - Duration::days(10),
    }
}

/// A commitment of `count` units of `meter`/`dim` over [start, end).
pub fn commitment(
    id: &str,
    meter: Meter,
    dim: &str,
    count: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    hourly: i64,
) -> Commitment {
    Commitment {
        id: CommitmentId(id.into()),
        tenant_id: TenantId("tnt_t".into()),
        meter,
        dimension: dim.into(),
        count,
        start_at: start,
        end_at: end,
        hourly_price_micros: hourly,
        generation: 1,
        created_at: start,
        updated_at: start,
    }
}

/// An input over [`period`] with nothing but `records` and `books`.
pub fn input<'a>(records: &'a [UsageRecord], books: &'a [PriceBook]) -> RatingInput<'a> {
    let (period_start, period_end) = period();
    RatingInput {
        period_start,
        period_end,
        records,
        books,
        commitments: &[],
        credits: &[],
        support: None,
        default_currency: "USD",
    }
}

/// A draft invoice holding what `rate` gave.
pub fn invoice(rated: &Rated) -> Invoice {
    let (period_start, period_end) = period();
    Invoice {
        id: InvoiceId("inv_draft".into()),
        kind: InvoiceKind::Invoice,
        number: None,
        tenant_id: TenantId("tnt_t".into()),
        status: InvoiceStatus::Draft,
        period_start,
        period_end,
        currency: rated.currency.clone(),
        lines: rated.lines.clone(),
        subtotal_micros: rated.subtotal_micros,
        credits_micros: rated.credits_micros,
        total_micros: rated.total_micros,
        grace_until: period_end,
        replaces: None,
        replaced_by: None,
        computed_at: period_end,
        finalized_at: None,
        voided_at: None,
        generation: 1,
        created_at: period_end,
        updated_at: period_end,
    }
}
