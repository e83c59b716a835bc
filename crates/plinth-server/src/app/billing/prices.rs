//! Prices: price book versions (everyone reads them; operators add versions, which are
//! immutable) and tenants' billing settings (price book and support tier).

use super::invoices::billing_tenant;
use crate::app::billing;
use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;
use serde_json::json;

/// Refuses prices that cannot rate: a currency that is not three capital letters, a
/// non-positive unit size, negative prices or minimums, or tiers out of order.
fn check_prices(currency: &str, prices: &[Price]) -> Result<()> {
    let bad = |i: usize, rule: &str, why: String| {
        Error::invalid("invalid_price", format!("prices[{i}]: {why}"))
            .with_constraint(json!({ "field": format!("prices[{i}]"), "rule": rule }))
    };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid("invalid_value", "currency must be an ISO 4217 code such as USD")
            .with_constraint(json!({ "field": "currency", "rule": "iso-4217" })));
    }
    if prices.len() > 1000 {
        return Err(Error::invalid("too_many", "at most 1000 prices per book")
            .with_constraint(json!({ "field": "prices", "rule": "max-items", "max": 1000 })));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in prices.iter().enumerate() {
        if !seen.insert((p.meter, p.dimension.clone())) {
            return Err(bad(i, "unique", "a second price for the same meter and dimension".into()));
        }
        if p.units_per_pricing_unit <= 0 {
            return Err(bad(i, "> 0", "units_per_pricing_unit must be positive".into()));
        }
        if p.unit_price_micros < 0 || p.min_seconds_per_start < 0 || p.tiers.iter().any(|t| t.unit_price_micros < 0) {
            return Err(bad(i, ">= 0", "prices and minimums cannot be negative".into()));
        }
        validate::text("pricing_unit", &p.pricing_unit, 64)?;
        match p.model {
            ChargeModel::Flat if !p.tiers.is_empty() => {
                return Err(bad(i, "no-tiers", "a flat price has no tiers".into()));
            }
            ChargeModel::Graduated | ChargeModel::Volume => {
                let ok = !p.tiers.is_empty()
                    && p.tiers.last().is_some_and(|t| t.up_to.is_none())
                    && p.tiers[..p.tiers.len() - 1].iter().all(|t| t.up_to.is_some())
                    && p.tiers.windows(2).all(|w| match (w[0].up_to, w[1].up_to) {
                        (Some(a), Some(b)) => a < b,
                        _ => true,
                    })
                    && p.tiers.first().and_then(|t| t.up_to).is_none_or(|u| u > 0);
                if !ok {
                    return Err(bad(
                        i,
                        "ascending-tiers",
                        "tiers must ascend by up_to and end with an open tier".into(),
                    ));
                }
            }
            ChargeModel::Flat => {}
        }
    }
    Ok(())
}

/// List price book versions (everyone may read prices).
pub async fn price_books(st: &AppState, p: &PageParams, f: PriceBookFilter) -> Result<Page<PriceBook>> {
    let pg = Paging::from(p)?;
    let filters: Vec<(&str, String)> = f.name.into_iter().map(|n| ("name", n)).collect();
    Ok(st.store.list::<PriceBook>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get a price book version.
pub async fn price_book(st: &AppState, id: &str) -> Result<PriceBook> {
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// Add a price book version (operators): effective from its date until the next version
/// of the same name. Versions are immutable.
pub async fn create_price_book(st: &AppState, caller: &Caller, b: PriceBookCreate) -> Result<PriceBook> {
    caller.require_operator("changing prices")?;
    validate::dns_label("name", &b.name)?;
    check_prices(&b.currency, &b.prices)?;
    let versions: Vec<PriceBook> = st.store.list_all(&Scope::Platform, &[("name", b.name.clone())]).await?;
    if let Some(last) = versions.iter().max_by_key(|v| v.version)
        && b.effective_from <= last.effective_from
    {
        return Err(Error::invalid(
            "invalid_value",
            format!("effective_from must be after version {}'s ({})", last.version, last.effective_from.to_rfc3339()),
        )
        .with_constraint(json!({ "field": "effective_from", "rule": "after-previous-version" })));
    }
    let now = Utc::now();
    let book = PriceBook {
        id: PriceBookId::generate(),
        name: b.name,
        version: versions.iter().map(|v| v.version).max().unwrap_or(0) + 1,
        currency: b.currency,
        effective_from: b.effective_from,
        prices: b.prices,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&book, &caller.audit()).await?;
    Ok(book)
}

/// A tenant's billing settings (price book and support tier).
pub async fn account(st: &AppState, caller: &Caller, id: &str) -> Result<BillingAccount> {
    let t: Tenant = st.store.get(&caller.scope(), id).await?;
    let t = billing_tenant(st, caller, Some(t.id.as_str())).await?;
    Ok(st.store.billing_account(t.as_str()).await?.unwrap_or(BillingAccount {
        tenant_id: t,
        price_book: billing::DEFAULT_BOOK.into(),
        support: None,
    }))
}

/// Set a tenant's billing settings (operators).
pub async fn set_account(st: &AppState, caller: &Caller, id: &str, mut b: BillingAccount) -> Result<BillingAccount> {
    caller.require_operator("changing billing settings")?;
    let t: Tenant = st.store.get(&Scope::Platform, id).await?;
    validate::dns_label("price_book", &b.price_book)?;
    if let Some(s) = &b.support
        && (!(0..=10_000).contains(&s.basis_points) || s.minimum_micros < 0)
    {
        return Err(Error::invalid("invalid_value", "support: basis_points 0–10000, minimum_micros ≥ 0")
            .with_constraint(json!({ "field": "support", "rule": "range" })));
    }
    b.tenant_id = t.id.clone();
    st.store.put_billing_account(&b).await?;
    st.store.record_audit(&caller.audit(), Some(id), Some(id), 200, None).await?;
    Ok(b)
}

/// What running one instance of `shape` (id or name) would cost the caller's tenant (an
/// operator's: `q.tenant_id`'s, else the default book's), under the price book version in
/// effect now.
pub async fn estimate(st: &AppState, caller: &Caller, shape: &str, q: PriceEstimateQuery) -> Result<PriceEstimate> {
    let shape: Shape = if ShapeId::parse(shape).is_some() {
        st.store.get(&Scope::Platform, shape).await?
    } else {
        let named = st.store.list::<Shape>(&Scope::Platform, &[("name", shape.to_string())], 1, None).await?;
        named.items.into_iter().next().ok_or_else(|| Error::not_found("shape", shape))?
    };
    let tenant = match (&caller.principal.tenant_id, caller.principal.is_operator()) {
        (_, true) => match q.tenant_id {
            Some(t) => Some(st.store.get::<Tenant>(&Scope::Platform, t.as_str()).await?.id),
            None => None,
        },
        (Some(own), false) => Some(own.clone()),
        (None, false) => None,
    };
    let account = match &tenant {
        Some(t) => st.store.billing_account(t.as_str()).await?,
        None => None,
    };
    let name = account.map(|a| a.price_book).unwrap_or_else(|| billing::DEFAULT_BOOK.to_string());
    let books: Vec<PriceBook> = st.store.list_all(&Scope::Platform, &[("name", name.clone())]).await?;
    let Some((_, book)) = plinth_domain::rating::price::Books::new(&books).at(st.store.now()) else {
        return Err(Error::conflict("no_price_book", format!("no version of price book {name} is in effect"))
            .with_constraint(json!({ "rule": "price-book", "name": name })));
    };
    let e = plinth_domain::rating::estimate::running_instance(book, &shape.name, shape.disk_gib, shape.gpu.as_ref())
        .map_err(|e| Error::conflict("rating_failed", format!("the shape cannot be priced: {e}")))?;
    Ok(PriceEstimate {
        shape_id: shape.id,
        shape_name: shape.name,
        price_book_id: book.id.clone(),
        price_book: book.name.clone(),
        price_book_version: book.version,
        currency: e.currency,
        lines: e
            .lines
            .into_iter()
            .map(|l| PriceEstimateLine {
                meter: l.meter,
                dimension: l.dimension,
                multiplier: l.multiplier,
                hourly_micros: l.hourly_micros,
                monthly_micros: l.monthly_micros,
            })
            .collect(),
        hourly_micros: e.hourly_micros,
        monthly_micros: e.monthly_micros,
        hours_per_month: plinth_domain::rating::estimate::HOURS_PER_MONTH,
    })
}
