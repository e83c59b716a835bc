//! Credits: which grants an invoice draws on, how much each gives, and their lines.
//!
//! A grant is eligible when it is in the invoice's currency, in effect during the period
//! (`effective_at < period_end` and no expiry or `expires_at > period_start`) and has some
//! left (`amount − used > 0`). Eligible grants are drawn in order of priority (lower
//! first), then sooner expiry (none last), then older creation, then id; each gives
//! min(what it has left, what is still owed), so the total never goes below zero.

use super::money::money;
use chrono::{DateTime, Utc};
use plinth_api::{ChargeCategory, CreditGrant, InvoiceLine, Rounding};
use std::cmp::Ordering;

/// What one grant gives to the invoice.
pub(crate) struct Draw<'a> {
    pub grant: &'a CreditGrant,
    /// What the grant had left before this invoice.
    pub remaining: i64,
    /// What it gives (positive, at most `remaining`).
    pub amount: i64,
}

/// Draws on `grants` for `owed` micro-units (non-negative), in draw order.
pub(crate) fn draws<'a>(
    grants: &'a [CreditGrant],
    currency: &str,
    period: (DateTime<Utc>, DateTime<Utc>),
    owed: i128,
) -> Vec<Draw<'a>> {
    let mut eligible: Vec<(&CreditGrant, i64)> = grants
        .iter()
        .filter(|g| g.currency.eq_ignore_ascii_case(currency))
        .filter(|g| g.effective_at < period.1 && g.expires_at.is_none_or(|e| e > period.0))
        .filter_map(|g| {
            let left = i128::from(g.amount_micros) - i128::from(g.used_micros);
            (left > 0).then(|| (g, i64::try_from(left).unwrap_or(i64::MAX)))
        })
        .collect();
    eligible.sort_by(|a, b| draw_order(a.0, b.0));
    let mut owed = owed.max(0);
    let mut out = Vec::new();
    for (grant, remaining) in eligible {
        if owed == 0 {
            break;
        }
        // min(remaining, owed) ≤ remaining, so it fits in i64.
        let amount = i128::from(remaining).min(owed);
        owed -= amount;
        out.push(Draw { grant, remaining, amount: i64::try_from(amount).unwrap_or(remaining) });
    }
    out
}

/// Priority ascending, expiry ascending (none last), creation ascending, id.
fn draw_order(a: &CreditGrant, b: &CreditGrant) -> Ordering {
    let expiry = match (a.expires_at, b.expires_at) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    a.priority.cmp(&b.priority).then(expiry).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id))
}

/// The credit line of a draw: a negative amount, exact (nothing to round).
pub(crate) fn line(d: &Draw, currency: &str, period: (DateTime<Utc>, DateTime<Utc>)) -> InvoiceLine {
    InvoiceLine {
        number: 0,
        category: ChargeCategory::Credit,
        meter: None,
        dimension: d.grant.id.to_string(),
        description: format!(
            "credit {}: {} ({} of {} {currency} left)",
            d.grant.id,
            d.grant.description,
            money(d.amount),
            money(d.remaining)
        ),
        resource_id: None,
        consumed_quantity_micros: 0,
        consumed_unit: String::new(),
        pricing_quantity_micros: 0,
        pricing_unit: String::new(),
        unit_price_micros: 0,
        amount_micros: -d.amount,
        list_amount_micros: None,
        rounding: Rounding::Down,
        price_book_id: None,
        record_ids: Vec::new(),
        commitment_id: None,
        credit_id: Some(d.grant.id.clone()),
        charge_class: None,
        charge_period_start: period.0,
        charge_period_end: period.1,
    }
}

#[cfg(test)]
mod tests {
    use crate::rating::fixtures::*;
    use crate::rating::{Rated, RatingInput, rate};
    use chrono::Duration;
    use plinth_api::*;

    /// 100 hours at 1.00 USD = 100 USD owed.
    fn rate_owing_100(credits: &[CreditGrant]) -> Rated {
        let books = [book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 1_000_000, Rounding::HalfUp)])];
        let records = [rec(1, "ins_a", Meter::RunningSeconds, "c1.small", day(2), 100 * 3600, 1)];
        rate(&RatingInput { credits, ..input(&records, &books) }).unwrap()
    }

    fn draws(r: &Rated) -> Vec<(&str, i64)> {
        r.credit_draws.iter().map(|(id, a)| (id.as_str(), *a)).collect()
    }

    #[test]
    fn grants_are_drawn_by_priority_then_expiry_then_age() {
        let mut soon = grant("cr_soon", 30_000_000, 0, 1);
        soon.expires_at = Some(day(20));
        let mut later = grant("cr_later", 30_000_000, 0, 1);
        later.expires_at = Some(day(25));
        let never = grant("cr_never", 30_000_000, 0, 1);
        let first = grant("cr_zfirst", 15_000_000, 0, 0);
        let mut old = grant("cr_old", 50_000_000, 0, 2);
        old.created_at -= Duration::days(5);
        let young = grant("cr_young", 50_000_000, 0, 2);
        let r = rate_owing_100(&[young, never, later, old, soon, first]);
        // 15 + 30 + 30 + 25 (partial) = 100.
        assert_eq!(
            draws(&r),
            vec![
                ("cr_zfirst", 15_000_000),
                ("cr_soon", 30_000_000),
                ("cr_later", 30_000_000),
                ("cr_never", 25_000_000)
            ]
        );
        assert_eq!(r.subtotal_micros, 100_000_000);
        assert_eq!(r.credits_micros, -100_000_000);
        assert_eq!(r.total_micros, 0);
        let credit_lines: Vec<&InvoiceLine> = r.lines.iter().filter(|l| l.category == ChargeCategory::Credit).collect();
        assert_eq!(credit_lines.len(), 4);
        assert_eq!(credit_lines[3].amount_micros, -25_000_000);
        assert_eq!(credit_lines[3].credit_id.as_ref().unwrap().as_str(), "cr_never");
        assert_eq!(credit_lines[3].dimension, "cr_never");
        assert!(
            credit_lines[3].description.contains("25.000000 of 30.000000 USD left"),
            "{}",
            credit_lines[3].description
        );
    }

    #[test]
    fn older_grants_go_first_on_equal_priority_and_expiry() {
        let mut old = grant("cr_b", 60_000_000, 0, 2);
        old.created_at -= Duration::days(5);
        let young = grant("cr_a", 60_000_000, 0, 2);
        let r = rate_owing_100(&[young, old]);
        assert_eq!(draws(&r), vec![("cr_b", 60_000_000), ("cr_a", 40_000_000)]);
    }

    #[test]
    fn what_earlier_invoices_drew_is_not_drawn_again() {
        let r = rate_owing_100(&[grant("cr_a", 50_000_000, 45_000_000, 0), grant("cr_b", 10_000_000, 10_000_000, 0)]);
        assert_eq!(draws(&r), vec![("cr_a", 5_000_000)]);
        assert_eq!(r.total_micros, 95_000_000);
    }

    #[test]
    fn grants_out_of_period_or_currency_are_ignored() {
        let mut expired = grant("cr_expired", 10_000_000, 0, 0);
        expired.expires_at = Some(day(1)); // exclusive: expired at the period start
        let mut future = grant("cr_future", 10_000_000, 0, 0);
        future.effective_at = day(31);
        let mut eur = grant("cr_eur", 10_000_000, 0, 0);
        eur.currency = "EUR".into();
        let mut late = grant("cr_late", 10_000_000, 0, 5);
        late.effective_at = day(30);
        let mut just = grant("cr_just", 10_000_000, 0, 5);
        just.expires_at = Some(day(1) + Duration::microseconds(1));
        let r = rate_owing_100(&[expired, future, eur, late, just]);
        assert_eq!(draws(&r), vec![("cr_just", 10_000_000), ("cr_late", 10_000_000)]);
    }

    #[test]
    fn the_total_never_goes_negative() {
        let r = rate_owing_100(&[grant("cr_big", 1_000_000_000, 0, 0), grant("cr_more", 5, 0, 1)]);
        assert_eq!(draws(&r), vec![("cr_big", 100_000_000)]);
        assert_eq!(r.total_micros, 0);
        // Nothing owed: nothing drawn, no credit line.
        let books = [book("pb_1", day(1), "USD", vec![])];
        let grants = [grant("cr_big", 1_000_000_000, 0, 0)];
        let r = rate(&RatingInput { credits: &grants, ..input(&[], &books) }).unwrap();
        assert!(r.lines.is_empty());
        assert!(r.credit_draws.is_empty());
        assert_eq!((r.subtotal_micros, r.credits_micros, r.total_micros), (0, 0, 0));
    }
}
