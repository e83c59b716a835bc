//! Rating: a tenant's usage records of one billing period, its price book versions,
//! commitments, credit grants and support tier in; invoice lines and totals out.
//!
//! [`rate`] owns the order of work and the usage lines: records are grouped into one line
//! per (meter, dimension, price book version), each line's billed quantity (after minimums,
//! less what commitments covered) is priced exactly and rounded once, by the line's rule.
//! Then come commitment purchases, the support tier (both charged before credits), and the
//! credit grants. `price` owns choosing and applying a price, `commit` commitments,
//! `credit` grant draws, `support` the support tier, `resource` the per-resource
//! breakdown, `focus` the FOCUS 1.2 and CSV exports, `estimate` prices before anything exists, `money`
//! exact arithmetic.
//!
//! Pure: no I/O, no clock. Money is `i64` micro-units of currency, intermediate math exact
//! in `i128`.

mod commit;
mod credit;
pub mod estimate;
#[cfg(test)]
mod fixtures;
pub mod focus;
pub mod money;
pub mod price;
mod resource;
mod support;

pub use focus::{FOCUS_COLUMNS, FocusAccount, focus_rows, invoice_csv, to_csv};
pub use resource::by_resource;

use chrono::{DateTime, Utc};
use money::{MICROS, decimal, round_div, to_i64};
use plinth_api::{
    ChargeCategory, ChargeModel, Commitment, CreditGrant, CreditId, InvoiceLine, Meter, Price, PriceBook, PriceBookId,
    Rounding, SupportTier, UsageRecord, UsageRecordId,
};
use std::collections::BTreeMap;

/// Everything one invoice is rated from.
#[derive(Clone, Copy, Debug)]
pub struct RatingInput<'a> {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Closed records of one tenant inside the period (the caller closes open intervals
    /// virtually at "now" for drafts).
    pub records: &'a [UsageRecord],
    /// Every version of the tenant's price book (same name), any order.
    pub books: &'a [PriceBook],
    pub commitments: &'a [Commitment],
    /// Grants of the tenant with what earlier finalized invoices already drew (`used_micros`).
    pub credits: &'a [CreditGrant],
    pub support: Option<&'a SupportTier>,
    /// Currency if no book applies.
    pub default_currency: &'a str,
}

/// A rated invoice: its lines (numbered 1, 2, …) and totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rated {
    pub currency: String,
    pub lines: Vec<InvoiceLine>,
    /// Usage, commitment and support lines.
    pub subtotal_micros: i64,
    /// Credit lines (zero or negative).
    pub credits_micros: i64,
    /// subtotal + credits, never below zero.
    pub total_micros: i64,
    /// What each grant gives to this invoice (positive micro-units), in draw order.
    pub credit_draws: Vec<(CreditId, i64)>,
}

/// Why an invoice cannot be rated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    #[error("usage record {record} is open: an interval without an end or a counter without a quantity")]
    OpenRecord { record: UsageRecordId },
    #[error("usage record {record} is priced in {found}, other records of the period in {expected}")]
    MixedCurrencies { record: UsageRecordId, expected: String, found: String },
    #[error("the {} price of price book {book} is unusable: {reason}", .meter.as_str())]
    InvalidPrice { book: PriceBookId, meter: Meter, reason: &'static str },
    #[error("an amount or quantity does not fit in 64-bit micro-units")]
    Overflow,
}

/// The usage of one invoice line while it is built.
pub(crate) struct Group<'a> {
    pub meter: Meter,
    pub dimension: &'a str,
    /// The book version and price rating it; `None` when unpriced.
    pub priced: Option<(&'a PriceBook, &'a Price)>,
    pub records: Vec<&'a UsageRecord>,
    /// Σ quantity, millionths of the meter's unit.
    pub consumed: i128,
    /// Σ billable quantity (after minimums), millionths of the meter's unit.
    pub billed: i128,
    pub min_applied: bool,
    /// What commitments covered, millionths of the meter's unit, in commitment order.
    pub covered: Vec<(&'a Commitment, i128)>,
}

impl Group<'_> {
    /// Billed quantity less what commitments covered (coverage never takes it below zero).
    fn billed_after_cover(&self) -> i128 {
        let covered: i128 = self.covered.iter().map(|c| c.1).sum();
        self.billed - covered.min(self.billed.max(0))
    }
}

/// Line order: `Meter::ALL` order, dimension, then book versions in effect order, unpriced last.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey<'a> {
    meter: usize,
    dimension: &'a str,
    unpriced: bool,
    book: usize,
}

/// Rates one tenant's billing period. Lines come in this order: usage (by `Meter::ALL`,
/// dimension, book version), commitment purchases (by start, id), support, credits (in
/// draw order).
pub fn rate(input: &RatingInput) -> Result<Rated, RatingError> {
    let period = (input.period_start, input.period_end);
    let books = price::Books::new(input.books);
    let mut currency: Option<&str> = None;
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for r in input.records {
        // Reserved capacity is billed by its commitment's purchase line, which lists these.
        if r.meter == Meter::ReservedSeconds {
            continue;
        }
        let quantity = price::quantity_micros(r)?;
        let priced = books
            .at(r.start_at)
            .and_then(|(pos, b)| price::choose_price(b, r.meter, &r.dimension).map(|p| (pos, b, p)));
        if let Some((_, b, _)) = priced {
            match currency {
                None => currency = Some(&b.currency),
                Some(c) if c != b.currency => {
                    return Err(RatingError::MixedCurrencies {
                        record: r.id.clone(),
                        expected: c.to_string(),
                        found: b.currency.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        let key = GroupKey {
            meter: meter_pos(r.meter),
            dimension: &r.dimension,
            unpriced: priced.is_none(),
            book: priced.map_or(0, |p| p.0),
        };
        let g = groups.entry(key).or_insert_with(|| Group {
            meter: r.meter,
            dimension: &r.dimension,
            priced: priced.map(|(_, b, p)| (b, p)),
            records: Vec::new(),
            consumed: 0,
            billed: 0,
            min_applied: false,
            covered: Vec::new(),
        });
        let billed = price::billable_micros(r, quantity, priced.map(|p| p.2));
        g.consumed = money::add(g.consumed, quantity.into())?;
        g.billed = money::add(g.billed, billed)?;
        g.min_applied |= billed > i128::from(quantity);
        g.records.push(r);
    }
    let currency = currency.map_or_else(|| fallback_currency(&books, input), str::to_string);
    let mut groups: Vec<Group> = groups.into_values().collect();

    let commitments = commit::active(input.commitments, period);
    commit::cover(&mut groups, &commitments)?;

    let mut lines = Vec::new();
    let mut usage_subtotal = 0i128;
    for g in &groups {
        let line = usage_line(g, &currency, period)?;
        usage_subtotal += i128::from(line.amount_micros);
        lines.push(line);
    }
    let mut subtotal = usage_subtotal;
    for c in &commitments {
        let mut line = commit::purchase_line(c, &groups, &currency)?;
        line.record_ids = input
            .records
            .iter()
            .filter(|r| r.meter == Meter::ReservedSeconds && r.resource_id == c.c.id.as_str())
            .map(|r| r.id.clone())
            .collect();
        line.record_ids.sort();
        subtotal += i128::from(line.amount_micros);
        lines.push(line);
    }
    if let Some(tier) = input.support {
        let line = support::line(tier, usage_subtotal, &currency, period)?;
        subtotal += i128::from(line.amount_micros);
        lines.push(line);
    }
    let draws = credit::draws(input.credits, &currency, period, subtotal.max(0));
    let mut credits = 0i128;
    for d in &draws {
        credits -= i128::from(d.amount);
        lines.push(credit::line(d, &currency, period));
    }
    for (i, line) in lines.iter_mut().enumerate() {
        line.number = u32::try_from(i + 1).map_err(|_| RatingError::Overflow)?;
    }
    Ok(Rated {
        currency,
        lines,
        subtotal_micros: to_i64(subtotal)?,
        credits_micros: to_i64(credits)?,
        total_micros: to_i64((subtotal + credits).max(0))?,
        credit_draws: draws.iter().map(|d| (d.grant.id.clone(), d.amount)).collect(),
    })
}

/// Currency when no record was priced: the book in effect at the period start, else the
/// first version taking effect inside the period, else the default.
fn fallback_currency(books: &price::Books, input: &RatingInput) -> String {
    books
        .at(input.period_start)
        .or_else(|| books.at(input.period_end - chrono::Duration::microseconds(1)))
        .map_or_else(|| input.default_currency.to_string(), |(_, b)| b.currency.clone())
}

fn meter_pos(meter: Meter) -> usize {
    Meter::ALL.iter().position(|m| *m == meter).unwrap_or(Meter::ALL.len())
}

/// One usage line of a group.
fn usage_line(g: &Group, currency: &str, period: (DateTime<Utc>, DateTime<Utc>)) -> Result<InvoiceLine, RatingError> {
    let billed = g.billed_after_cover();
    let mut record_ids: Vec<UsageRecordId> = g.records.iter().map(|r| r.id.clone()).collect();
    record_ids.sort();
    let subject = subject(g.meter, g.dimension);
    let mut line = InvoiceLine {
        number: 0,
        category: ChargeCategory::Usage,
        meter: Some(g.meter),
        dimension: g.dimension.to_string(),
        description: String::new(),
        resource_id: None,
        consumed_quantity_micros: to_i64(g.consumed)?,
        consumed_unit: g.meter.unit().to_string(),
        pricing_quantity_micros: 0,
        pricing_unit: g.meter.unit().to_string(),
        unit_price_micros: 0,
        amount_micros: 0,
        list_amount_micros: None,
        rounding: Rounding::Down,
        price_book_id: None,
        record_ids,
        commitment_id: None,
        credit_id: None,
        charge_class: None,
        charge_period_start: period.0,
        charge_period_end: period.1,
    };
    let Some((book, price)) = g.priced else {
        line.pricing_quantity_micros = to_i64(billed)?;
        let unit = g.meter.unit();
        line.description = format!("{subject}: not priced ({} {})", decimal(billed), plural(unit, billed));
        line.description += &covered_note(g, 1, unit);
        return Ok(line);
    };
    let upp = i128::from(price.units_per_pricing_unit);
    let priced = price::price_quantity(book, price, billed)?;
    line.pricing_quantity_micros = to_i64(round_div(billed, upp, Rounding::HalfUp))?;
    line.pricing_unit = price.pricing_unit.clone();
    line.unit_price_micros = priced.unit_price_micros;
    line.amount_micros = to_i64(priced.amount.round(price.rounding))?;
    line.rounding = price.rounding;
    line.price_book_id = Some(book.id.clone());
    if !g.covered.is_empty() && billed != g.billed {
        let list = price::price_quantity(book, price, g.billed)?;
        line.list_amount_micros = Some(to_i64(list.amount.round(price.rounding))?);
    }
    let q = i128::from(line.pricing_quantity_micros);
    let unit = price.pricing_unit.as_str();
    let how = match price.model {
        ChargeModel::Flat => " at",
        ChargeModel::Graduated => ", graduated tiers from",
        ChargeModel::Volume => ", volume tier at",
    };
    line.description = format!(
        "{subject} ({} {}{how} {} {currency}/{unit})",
        decimal(q),
        plural(unit, q),
        money::money(priced.applied_unit_price_micros)
    );
    line.description += &covered_note(g, upp, unit);
    if g.min_applied {
        line.description += &format!("; minimum {} s per start applied", price.min_seconds_per_start);
    }
    Ok(line)
}

/// `; 3 hours covered by commitment cmt_…` for each commitment that covered the group.
fn covered_note(g: &Group, upp: i128, unit: &str) -> String {
    g.covered
        .iter()
        .filter(|(_, q)| *q != 0)
        .map(|(c, q)| {
            let q = round_div(*q, upp, Rounding::HalfUp);
            format!("; {} {} covered by commitment {}", decimal(q), plural(unit, q), c.id)
        })
        .collect()
}

/// `running_seconds of shape c1.small`.
pub(crate) fn subject(meter: Meter, dimension: &str) -> String {
    if dimension.is_empty() {
        return meter.as_str().to_string();
    }
    let label = match meter {
        Meter::AllocatedSeconds | Meter::RunningSeconds | Meter::ReservedSeconds => "shape",
        Meter::GpuSeconds => "GPU class",
        Meter::DiskGibSeconds => "volume class",
        Meter::AddressSeconds | Meter::EgressBytes => "class",
    };
    format!("{} of {label} {dimension}", meter.as_str())
}

/// `hour` → `hours` unless the quantity (in micros) is exactly one; units ending in an
/// upper-case letter or an `s` (`GB`) stay as they are.
pub(crate) fn plural(unit: &str, quantity_micros: i128) -> String {
    match unit.chars().last() {
        Some(c) if quantity_micros != MICROS && c.is_ascii_lowercase() && c != 's' => format!("{unit}s"),
        _ => unit.to_string(),
    }
}

#[cfg(test)]
mod tests;
