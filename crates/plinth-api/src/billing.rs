//! Metering and billing wire types: usage ledger records, price books, invoices and their
//! lines, credit grants, commitments, budgets and quotas.
//!
//! Quantities are integers: a record's `quantity_micros` is in millionths of its meter's
//! unit (an interval of 90 s of `running_seconds` is 90,000,000), so seconds are exact to
//! the microsecond. Money is integer micro-units of the currency (1 USD = 1,000,000).
//! Rounding happens once, per invoice line, by the rule the line states.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// What a usage record measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    /// An instance holding a claim on a host (from claim to release), by shape.
    AllocatedSeconds,
    /// An instance running (observed running, or rebooting), by shape.
    RunningSeconds,
    /// GPUs held by an allocated instance, by GPU class: the multiplier is the GPU count.
    GpuSeconds,
    /// A disk existing, by volume class (boot disks: `local`): the multiplier is its GiB.
    DiskGibSeconds,
    /// An address held (added by the networking issue).
    AddressSeconds,
    /// Bytes sent out, reported by agents as a counter.
    EgressBytes,
    /// Reserved capacity of a commitment, by shape or GPU class: the multiplier is its count.
    ReservedSeconds,
}

impl Meter {
    /// Every meter, in a stable order.
    pub const ALL: [Meter; 7] = [
        Meter::AllocatedSeconds,
        Meter::RunningSeconds,
        Meter::GpuSeconds,
        Meter::DiskGibSeconds,
        Meter::AddressSeconds,
        Meter::EgressBytes,
        Meter::ReservedSeconds,
    ];

    /// The meter's name as stored and filtered on.
    pub fn as_str(self) -> &'static str {
        match self {
            Meter::AllocatedSeconds => "allocated_seconds",
            Meter::RunningSeconds => "running_seconds",
            Meter::GpuSeconds => "gpu_seconds",
            Meter::DiskGibSeconds => "disk_gib_seconds",
            Meter::AddressSeconds => "address_seconds",
            Meter::EgressBytes => "egress_bytes",
            Meter::ReservedSeconds => "reserved_seconds",
        }
    }

    /// Parses a meter name.
    pub fn parse(s: &str) -> Option<Meter> {
        Meter::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The unit of `quantity_micros / 1e6`.
    pub fn unit(self) -> &'static str {
        match self {
            Meter::AllocatedSeconds | Meter::RunningSeconds | Meter::AddressSeconds | Meter::ReservedSeconds => {
                "second"
            }
            Meter::GpuSeconds => "gpu-second",
            Meter::DiskGibSeconds => "GiB-second",
            Meter::EgressBytes => "byte",
        }
    }

    /// Whether records of this meter are intervals (time-weighted) rather than counters.
    pub fn is_interval(self) -> bool {
        !matches!(self, Meter::EgressBytes)
    }
}

/// One usage ledger record. Append-only: an interval is written open (`end_at` null) in
/// the same transaction as the transition that opens it, and closed once, in the same
/// transaction as the transition that closes it. Corrections are new records.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct UsageRecord {
    pub id: UsageRecordId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    /// The resource measured, e.g. an instance id.
    pub resource_id: String,
    /// `instance`, `volume`, `address`, `commitment`.
    pub resource_kind: String,
    pub meter: Meter,
    /// What the price depends on: a shape name, a GPU class, a volume class.
    pub dimension: String,
    /// The meter's unit.
    pub unit: String,
    /// Interval start (inclusive), or a counter's sample time.
    pub start_at: DateTime<Utc>,
    /// Interval end (exclusive); null while open. Equal to `start_at` for counters.
    pub end_at: Option<DateTime<Utc>>,
    /// Units accrued per second of an interval (1, a GPU count, a disk's GiB).
    pub multiplier: i64,
    /// Millionths of `unit`: multiplier × microseconds for a closed interval, the delta × 1e6
    /// for a counter; null while open.
    pub quantity_micros: Option<i64>,
    /// The interval begins with a start of the resource (a minimum billable duration
    /// applies to it); false for the continuation after a period cut-off or a move.
    pub first: bool,
    /// Billing period (start) the record belongs to: records never cross a period.
    pub period_start: DateTime<Utc>,
    /// shape, gpu_class, host, rack, runtime_class, …
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// What caused it: the instance event id of the transition, `period_cutoff`, or
    /// `counter:<source>#<seq>`.
    pub cause: String,
    pub created_at: DateTime<Utc>,
}

/// Filters for `GET /v1/usage`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub resource_id: Option<String>,
    pub meter: Option<String>,
    /// Records overlapping [from, to).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Largest number of records to return (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One counter sample reported by an agent: the source's running total.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct CounterSample {
    /// The reporting source, unique per counter (e.g. `hst_…/tap-ins_…/tx`).
    pub source: String,
    /// Strictly increasing per source; a repeated sequence number is ignored.
    pub seq: i64,
    pub meter: Meter,
    /// The instance counted (one of `instance_id` and `nic_id`).
    #[serde(default)]
    pub instance_id: Option<InstanceId>,
    /// The network interface counted (its host must be the reporting one).
    #[serde(default)]
    pub nic_id: Option<NicId>,
    /// What is counted, e.g. `internet` or `all` for `egress_bytes` (default `default`).
    #[serde(default)]
    pub dimension: Option<String>,
    /// The counter's running total; lower than the last one means the counter was reset.
    pub value: i64,
    pub at: DateTime<Utc>,
}

/// How a price turns a quantity into money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChargeModel {
    /// One unit price × quantity.
    Flat,
    /// Tiers priced in sequence: the first tier's units at its price, the next at the next.
    Graduated,
    /// All units at the price of the tier the total falls in.
    Volume,
}

/// How the one rounding per invoice line goes, to whole micro-units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    HalfUp,
    Up,
    Down,
}

/// One tier of a graduated or volume price.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct PriceTier {
    /// Upper bound of the tier in pricing units (inclusive); null for the last tier.
    pub up_to: Option<i64>,
    /// Micro-units of currency per pricing unit.
    pub unit_price_micros: i64,
}

/// The price of one meter (and dimension).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct Price {
    pub meter: Meter,
    /// A shape name, GPU class or volume class; null prices every dimension without its
    /// own price.
    #[serde(default)]
    pub dimension: Option<String>,
    pub model: ChargeModel,
    /// The pricing unit's name, e.g. `hour`, `GiB-month`, `GB`.
    pub pricing_unit: String,
    /// How many of the meter's units make one pricing unit (3600 seconds per hour).
    pub units_per_pricing_unit: i64,
    /// Micro-units of currency per pricing unit (flat model).
    #[serde(default)]
    pub unit_price_micros: i64,
    /// Tiers (graduated and volume models), ascending.
    #[serde(default)]
    pub tiers: Vec<PriceTier>,
    /// Each interval that begins with a start bills at least this many seconds.
    #[serde(default)]
    pub min_seconds_per_start: i64,
    pub rounding: Rounding,
}

/// A price book version: prices in one currency, effective from a date until the next
/// version of the same book.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct PriceBook {
    pub id: PriceBookId,
    /// The book's name; versions share it.
    pub name: String,
    /// 1, 2, … per name.
    pub version: i64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    pub effective_from: DateTime<Utc>,
    pub prices: Vec<Price>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/price-books`: a new version of the named book.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct PriceBookCreate {
    pub name: String,
    pub currency: String,
    pub effective_from: DateTime<Utc>,
    pub prices: Vec<Price>,
}

/// Where an invoice is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Recomputed on demand until finalized.
    Draft,
    /// Numbered and immutable.
    Finalized,
    /// Replaced by another invoice.
    Void,
}

/// What an invoice is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    Invoice,
    /// A correction after finalisation: negative lines against a finalized invoice.
    CreditNote,
}

/// FOCUS ChargeCategory of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
pub enum ChargeCategory {
    Usage,
    Purchase,
    Tax,
    Credit,
    Adjustment,
}

/// One line of an invoice.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct InvoiceLine {
    /// 1, 2, … within the invoice.
    pub number: u32,
    pub category: ChargeCategory,
    /// Null for lines not from a meter (credits, support).
    pub meter: Option<Meter>,
    /// A shape name, GPU class, commitment id, credit grant id, …
    pub dimension: String,
    pub description: String,
    /// Only when grouped by resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// Metered quantity in millionths of `consumed_unit` (before minimums and commitments).
    pub consumed_quantity_micros: i64,
    pub consumed_unit: String,
    /// Quantity charged, in millionths of `pricing_unit` (after minimums, less what a
    /// commitment covered).
    pub pricing_quantity_micros: i64,
    pub pricing_unit: String,
    /// Micro-units of currency per pricing unit (for tiered prices, the first tier's).
    pub unit_price_micros: i64,
    /// The line's amount in micro-units of currency, rounded once, by `rounding`.
    pub amount_micros: i64,
    /// What the line would have cost at list price had no commitment covered part of its
    /// usage (FOCUS ListCost), rounded the same way; null when nothing was covered (then
    /// it is `amount_micros`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_amount_micros: Option<i64>,
    /// The rule the one rounding of this line used.
    pub rounding: Rounding,
    pub price_book_id: Option<PriceBookId>,
    /// The ledger records the line came from.
    pub record_ids: Vec<UsageRecordId>,
    /// A commitment this line bills or draws on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment_id: Option<CommitmentId>,
    /// A credit grant this line applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_id: Option<CreditId>,
    /// FOCUS ChargeClass: `Correction` on credit notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_class: Option<String>,
    /// Charge period covered by the line.
    pub charge_period_start: DateTime<Utc>,
    pub charge_period_end: DateTime<Utc>,
}

/// An invoice: a tenant's charges for one billing period.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct Invoice {
    pub id: InvoiceId,
    pub kind: InvoiceKind,
    /// `INV-000001`, assigned at finalisation; null on drafts.
    pub number: Option<String>,
    pub tenant_id: TenantId,
    pub status: InvoiceStatus,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub currency: String,
    pub lines: Vec<InvoiceLine>,
    /// Sum of usage and purchase lines.
    pub subtotal_micros: i64,
    /// Sum of credit lines (zero or negative).
    pub credits_micros: i64,
    /// What the tenant pays: subtotal + credits (never below zero).
    pub total_micros: i64,
    /// Late counters are accepted into a draft until then.
    pub grace_until: DateTime<Utc>,
    /// The invoice this one replaces (after a void), or the one a credit note corrects.
    pub replaces: Option<InvoiceId>,
    pub replaced_by: Option<InvoiceId>,
    pub computed_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A credit grant: money the tenant's invoices draw on before they are paid.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct CreditGrant {
    pub id: CreditId,
    pub tenant_id: TenantId,
    pub description: String,
    /// Micro-units of currency granted.
    pub amount_micros: i64,
    /// Micro-units already drawn by finalized invoices.
    pub used_micros: i64,
    pub currency: String,
    /// Lower is drawn first; then the sooner expiry, then the older grant.
    pub priority: i32,
    pub effective_at: DateTime<Utc>,
    /// Exclusive; null never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A commitment: N units of a shape (running) or GPU class reserved for a term, billed
/// whether used or not; usage inside it is not billed again.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct Commitment {
    pub id: CommitmentId,
    pub tenant_id: TenantId,
    /// `running_seconds` (dimension = shape) or `gpu_seconds` (dimension = GPU class).
    pub meter: Meter,
    pub dimension: String,
    pub count: i64,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    /// Micro-units of currency per committed unit per hour.
    pub hourly_price_micros: i64,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A support tier: a percentage of usage with a monthly minimum.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SupportTier {
    pub name: String,
    /// Basis points of the usage subtotal (1000 = 10 %).
    pub basis_points: i64,
    /// Micro-units of currency per period at least.
    pub minimum_micros: i64,
}

/// What a budget does when the period's draft spend passes its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetAction {
    /// An event and an audit record, once per period.
    Notify,
    /// New billable resources are refused with `402 budget_exceeded`.
    BlockNew,
}

/// A monthly spend threshold for a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct Budget {
    pub id: BudgetId,
    pub tenant_id: TenantId,
    pub name: String,
    /// Micro-units of currency per billing period.
    pub threshold_micros: i64,
    pub action: BudgetAction,
    /// The last period (start) this budget was found exceeded in.
    pub exceeded_period: Option<DateTime<Utc>>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One quota: a limit on a resource for a tenant or a project, with what is used.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct QuotaEntry {
    /// A tenant or project id.
    pub scope_id: String,
    /// `instances`, `vcpus`, `memory_mib`, `disk_gib`, `gpus:<class>`.
    pub resource: String,
    /// Null when unlimited.
    pub limit: Option<i64>,
    pub used: i64,
    /// Null when unlimited.
    pub available: Option<i64>,
}

/// Body of `PUT /v1/quotas`: limits for one tenant or project (null removes a limit).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct QuotaSet {
    pub scope_id: String,
    pub limits: BTreeMap<String, Option<i64>>,
}

/// A tenant's billing settings: which price book rates its usage, and its support tier.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct BillingAccount {
    pub tenant_id: TenantId,
    /// The price book (by name) its usage is rated with; `default` unless set.
    pub price_book: String,
    pub support: Option<SupportTier>,
}

/// One (instance, meter) of the reconciliation report: the same time three ways.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ReconciliationRow {
    pub tenant_id: TenantId,
    pub resource_id: String,
    pub meter: Meter,
    pub dimension: String,
    /// Microseconds derived from the instance's event history alone (null for meters the
    /// history does not tell: GPU and disk quantities are checked ledger against invoice).
    pub lifecycle_micros: Option<i64>,
    /// Microseconds (quantity ÷ multiplier) in the ledger.
    pub metered_micros: i64,
    /// Microseconds on the period's invoice (null when there is none yet).
    pub invoiced_micros: Option<i64>,
    /// All three agree.
    pub matches: bool,
}

/// `GET /v1/billing/reconciliation`: lifecycle time against metered time against invoiced
/// quantity for every instance and meter of a period.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ReconciliationReport {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Open time is counted up to here (the period's end once it is over).
    pub as_of: DateTime<Utc>,
    pub rows: Vec<ReconciliationRow>,
    /// The rows that do not match; empty when everything reconciles.
    pub differences: Vec<ReconciliationRow>,
}

/// One row of `GET /v1/billing/revenue`: what a period's invoices charged for one meter
/// and dimension (shape, GPU class, …).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct RevenueRow {
    pub period_start: DateTime<Utc>,
    pub category: ChargeCategory,
    pub meter: Option<Meter>,
    pub dimension: String,
    pub currency: String,
    pub amount_micros: i64,
    /// How many invoices it is on.
    pub invoices: u32,
    /// Finalized invoices only (false: drafts included).
    pub finalized_only: bool,
}

/// Body of `POST /v1/invoices/{id}/credit-notes`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CreditNoteCreate {
    /// Micro-units of currency credited (positive).
    pub amount_micros: i64,
    pub description: String,
}

/// Body of `POST /v1/credits`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CreditGrantCreate {
    pub tenant_id: TenantId,
    pub description: String,
    pub amount_micros: i64,
    pub currency: String,
    #[serde(default)]
    pub priority: i32,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Body of `POST /v1/commitments`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CommitmentCreate {
    pub tenant_id: TenantId,
    pub meter: Meter,
    pub dimension: String,
    /// Units reserved (1–100,000).
    #[schema(minimum = 1, maximum = 100000)]
    pub count: i64,
    pub start_at: DateTime<Utc>,
    /// After `start_at`, and at most 3,653 days (ten years) after it: the term is written
    /// to the ledger as one record per billing period.
    pub end_at: DateTime<Utc>,
    /// Price of one unit-hour, in micro-units (0–1,000,000,000,000).
    #[schema(minimum = 0, maximum = 1e12)]
    pub hourly_price_micros: i64,
}

/// Body of `POST /v1/budgets`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct BudgetCreate {
    pub tenant_id: TenantId,
    pub name: String,
    pub threshold_micros: i64,
    pub action: BudgetAction,
}

/// Query of the billing period endpoints: `period=2026-11` (or an RFC 3339 instant).
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    pub period: Option<String>,
    /// Narrows to one tenant (operators).
    pub tenant_id: Option<String>,
    /// `csv` or `focus` (exports).
    pub format: Option<String>,
}

/// Answer to `POST /agent/v1/counters`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct CounterAck {
    /// New samples recorded.
    pub recorded: u32,
    /// Samples whose (source, sequence) was already recorded (or older): ignored.
    pub duplicate: u32,
    /// Samples refused: not a counter meter, negative values, or an instance not on this host.
    pub rejected: u32,
}

/// Filters of `GET /v1/invoices`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceFilter {
    /// Only this tenant's (operators; others see their own).
    pub tenant_id: Option<String>,
    /// Only invoices of this period (`2026-11`).
    pub period: Option<String>,
}

/// Query of `GET /v1/invoices/current`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CurrentQuery {
    pub tenant_id: Option<String>,
    /// `2026-11`; default the current period.
    pub period: Option<String>,
}

/// Query of `GET /v1/invoices/{id}/lines`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinesQuery {
    /// `resource`: usage lines broken down per resource (their amounts sum to the line's).
    pub group_by: Option<String>,
}

/// Query of `GET /v1/billing/revenue`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevenueQuery {
    /// `2026-11`; default every period.
    pub period: Option<String>,
    /// Include drafts (default false).
    pub drafts: Option<bool>,
}

/// Filters of `GET /v1/price-books`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PriceBookFilter {
    /// Only the versions of this book.
    pub name: Option<String>,
}

/// Query of `GET /v1/quotas`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotaQuery {
    /// A tenant id (its own limits and each of its projects') or a project id.
    pub scope_id: Option<String>,
}

/// What running one instance of a shape would cost, before it exists: each meter it would
/// record, priced by the rules its invoice would use (`GET /v1/shapes/{id}/price`).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct PriceEstimate {
    pub shape_id: ShapeId,
    pub shape_name: String,
    /// The price book version in effect now for the tenant (its own book, else `default`).
    pub price_book_id: PriceBookId,
    pub price_book: String,
    pub price_book_version: i64,
    pub currency: String,
    pub lines: Vec<PriceEstimateLine>,
    /// An hour of the priced lines, in micro-units of `currency`.
    pub hourly_micros: i64,
    /// A month (`hours_per_month` hours) of the priced lines.
    pub monthly_micros: i64,
    pub hours_per_month: i64,
}

/// One meter of a [`PriceEstimate`].
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct PriceEstimateLine {
    pub meter: Meter,
    pub dimension: String,
    /// Units of the dimension (GiB of disk, GPUs; 1 for the shape).
    pub multiplier: i64,
    /// `null`: the book does not price this meter (nothing would be charged for it).
    pub hourly_micros: Option<i64>,
    pub monthly_micros: Option<i64>,
}

/// Query of `GET /v1/shapes/{id}/price`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PriceEstimateQuery {
    /// Price for this tenant (operators; default: the `default` book). Tenants' users
    /// always get their own tenant's prices.
    pub tenant_id: Option<TenantId>,
}

/// Why an invoice line says what it says (`GET /v1/invoices/{id}/lines/{number}/evidence`):
/// the ledger records it adds up, each as the invoice counted it (an open interval closed
/// where the invoice was computed), the lifecycle transitions that opened them, the
/// operations behind those transitions, and the audit records of the resources involved.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct InvoiceLineEvidence {
    pub invoice_id: InvoiceId,
    pub line: InvoiceLine,
    pub records: Vec<EvidenceRecord>,
    /// Σ of the records' quantities, millionths of the line's `consumed_unit`: equal to
    /// the line's `consumed_quantity_micros`.
    pub records_quantity_micros: i64,
    /// The resources' lifecycle transitions from the first that opened a record (its
    /// `cause`) to where the invoice counted: the openings, and the requests and stops
    /// between them.
    pub transitions: Vec<crate::compute::InstanceEvent>,
    /// The operations those transitions belong to.
    pub operations: Vec<crate::operations::Operation>,
    /// Audit records of the records' resources, oldest first (at most 100 per resource).
    pub audit: Vec<crate::identity::AuditRecord>,
}

/// One ledger record as an invoice counted it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EvidenceRecord {
    pub record: UsageRecord,
    /// Seconds counted (an interval's length up to where the invoice counted it; null
    /// for counters).
    pub seconds: Option<f64>,
    /// The quantity counted, millionths of the meter's unit (multiplier × duration for an
    /// interval).
    pub quantity_micros: i64,
}
