//! A tenant's dashboard, the console's first page for tenants: instances by state, the
//! month's spend so far with a straight-line forecast to the period's end, quota use, and
//! the latest operations. Each panel is a use case the API has (`GET /v1/instances`,
//! `GET /v1/invoices/current`, `GET /v1/quotas`, `GET /v1/operations`); a panel the
//! caller's roles do not allow says so instead of failing the page.

use super::pages::when;
use super::render::{Equivalent, Layout, Page};
use crate::app::billing::invoices;
use crate::app::{AppState, Caller, instances, operations, quotas};
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use plinth_api::*;
use plinth_domain::rating::money::money;
use std::collections::BTreeMap;

/// The month so far, as the dashboard shows it.
pub struct Spend {
    pub so_far: String,
    pub forecast: String,
    pub period: String,
    pub invoice_id: String,
}

/// One quota as a bar.
pub struct QuotaBar {
    pub scope: String,
    pub resource: String,
    pub used: i64,
    /// `None`: unlimited.
    pub limit: Option<i64>,
}

/// One recent operation.
pub struct OpRow {
    pub id: String,
    pub kind: String,
    pub status: &'static str,
    pub target: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct DashboardPage {
    layout: Layout,
    states: Vec<(&'static str, usize)>,
    total: usize,
    spend: Option<Spend>,
    spend_problem: Option<String>,
    quotas: Vec<QuotaBar>,
    ops: Vec<OpRow>,
    equivalent: Equivalent,
}

/// `GET /`: operators start at the fleet, tenants at their dashboard.
pub async fn index(State(st): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    if caller.principal.is_operator() {
        return Redirect::to("/hosts").into_response();
    }
    let all = PageParams { limit: Some(MAX_LIMIT), cursor: None };
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut total = 0;
    if let Ok(p) = instances::list(&st, &caller, &all, InstanceFilter::default()).await {
        for i in &p.items {
            *states.entry(i.state.as_str()).or_default() += 1;
        }
        total = p.items.len();
    }
    let (spend, spend_problem) = match invoices::current(&st, &caller, CurrentQuery::default()).await {
        Ok(inv) => {
            let now = st.store.now().min(inv.period_end);
            let elapsed = (now - inv.period_start).num_seconds().max(1) as i128;
            let length = (inv.period_end - inv.period_start).num_seconds().max(1) as i128;
            let forecast = (i128::from(inv.total_micros) * length / elapsed).clamp(0, i128::from(i64::MAX)) as i64;
            let spend = Spend {
                so_far: format!("{} {}", inv.currency, money(inv.total_micros)),
                forecast: format!("{} {}", inv.currency, money(forecast)),
                period: format!("{} to {}", when(&inv.period_start), when(&inv.period_end)),
                invoice_id: inv.id.0,
            };
            (Some(spend), None)
        }
        Err(e) => (None, Some(e.detail)),
    };
    let quotas = quotas::list(&st, &caller, QuotaQuery::default())
        .await
        .map(|q| {
            q.into_iter()
                .map(|e| QuotaBar { scope: e.scope_id, resource: e.resource, used: e.used, limit: e.limit })
                .collect()
        })
        .unwrap_or_default();
    let ops = operations::list(&st, &caller, &all, OperationFilter::default())
        .await
        .map(|p| {
            p.items
                .iter()
                .rev()
                .take(10)
                .map(|o| OpRow {
                    id: o.id.0.clone(),
                    kind: o.kind.clone(),
                    status: o.status.as_str(),
                    target: o.target.clone(),
                    when: when(&o.created_at),
                })
                .collect()
        })
        .unwrap_or_default();
    let page = DashboardPage {
        layout: Layout::of(&st, &caller, "Dashboard").await,
        states: states.into_iter().collect(),
        total,
        spend,
        spend_problem,
        quotas,
        ops,
        equivalent: Equivalent::new("invoice show current", "GET", "/v1/invoices/current", None),
    };
    Page(page).into_response()
}
