//! Exports of an invoice: FOCUS 1.2 cost and usage rows (usage broken down per resource)
//! and a plain CSV of its lines, with RFC 4180 quoting.
//!
//! Every FOCUS cost column is the line's (or the resource piece's) amount as a decimal
//! with six places, so BilledCost summed over an invoice's rows is exactly its total
//! (when the subtotal is not negative).

use super::money::{decimal, money};
use super::resource::by_resource;
use chrono::{DateTime, SecondsFormat, Utc};
use plinth_api::{ChargeCategory, Invoice, InvoiceKind, InvoiceLine, Meter, Rounding, UsageRecord, UsageRecordId};
use std::collections::{BTreeMap, HashMap};

/// Who issues the invoices and where the services run: the FOCUS columns that come from
/// the deployment, not from the invoice.
#[derive(Clone, Copy, Debug)]
pub struct FocusAccount<'a> {
    pub billing_account_id: &'a str,
    pub billing_account_name: &'a str,
    pub invoice_issuer: &'a str,
    pub provider: &'a str,
    pub region_id: &'a str,
    pub region_name: &'a str,
}

/// The FOCUS 1.2 columns [`focus_rows`] writes, in order: every mandatory column plus the
/// conditional and recommended ones Plinth fills (omitted: BillingAccountType,
/// PricingCurrency{ContractedUnitPrice,EffectiveCost,ListUnitPrice}, SkuPriceDetails).
pub const FOCUS_COLUMNS: &[&str] = &[
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
];

/// The FOCUS rows of an invoice, each in [`FOCUS_COLUMNS`] order: usage lines broken down
/// per resource ([`by_resource`]), other lines one row each. Empty text is a null.
pub fn focus_rows(invoice: &Invoice, records: &[UsageRecord], acct: &FocusAccount) -> Vec<Vec<String>> {
    let by_id: HashMap<&UsageRecordId, &UsageRecord> = records.iter().map(|r| (&r.id, r)).collect();
    let invoice_id = invoice.number.clone().unwrap_or_else(|| invoice.id.to_string());
    by_resource(&invoice.lines, records)
        .iter()
        .map(|line| {
            let mut row: HashMap<&'static str, String> = HashMap::new();
            let mut set = |col: &'static str, v: String| {
                debug_assert!(FOCUS_COLUMNS.contains(&col), "{col}");
                row.insert(col, v);
            };
            let cost = money(line.amount_micros);
            set("BilledCost", cost.clone());
            set("EffectiveCost", cost.clone());
            set("ContractedCost", cost);
            set("BillingAccountId", acct.billing_account_id.to_string());
            set("BillingAccountName", acct.billing_account_name.to_string());
            set("BillingCurrency", invoice.currency.clone());
            set("BillingPeriodStart", rfc3339(invoice.period_start));
            set("BillingPeriodEnd", rfc3339(invoice.period_end));
            set("ChargePeriodStart", rfc3339(line.charge_period_start));
            set("ChargePeriodEnd", rfc3339(line.charge_period_end));
            set("ChargeCategory", category(line.category).to_string());
            let correction =
                invoice.kind == InvoiceKind::CreditNote || line.charge_class.as_deref() == Some("Correction");
            set("ChargeClass", if correction { "Correction".to_string() } else { String::new() });
            set("ChargeDescription", line.description.clone());
            set("InvoiceId", invoice_id.clone());
            set("InvoiceIssuerName", acct.invoice_issuer.to_string());
            set("ProviderName", acct.provider.to_string());
            set("PublisherName", acct.provider.to_string());
            set("RegionId", acct.region_id.to_string());
            set("RegionName", acct.region_name.to_string());
            set("ServiceCategory", "Compute".to_string());
            set("ServiceName", "Plinth Compute".to_string());
            set("PricingCurrency", invoice.currency.clone());
            let vm = matches!(
                line.meter,
                Some(Meter::AllocatedSeconds | Meter::RunningSeconds | Meter::GpuSeconds | Meter::ReservedSeconds)
            );
            set("ServiceSubcategory", if vm { "Virtual Machines" } else { "Other (Compute)" }.to_string());
            if line.category == ChargeCategory::Credit {
                set("ChargeFrequency", "One-Time".to_string());
                set("ListCost", money(0));
                return in_order(row);
            }
            // Usage and purchases: priced rows.
            set("ListCost", money(line.list_amount_micros.unwrap_or(line.amount_micros)));
            set("ListUnitPrice", money(line.unit_price_micros));
            set("ContractedUnitPrice", money(line.unit_price_micros));
            set("PricingQuantity", decimal(line.pricing_quantity_micros.into()));
            set("PricingUnit", line.pricing_unit.clone());
            let sku = |what: &str, dim: &str| format!("{what}:{dim}");
            let meter = line.meter.map_or("", Meter::as_str);
            if let Some(cmt) = &line.commitment_id {
                set("ChargeFrequency", "Recurring".to_string());
                set("PricingCategory", "Committed".to_string());
                set("CommitmentDiscountId", cmt.to_string());
                set("CommitmentDiscountCategory", "Usage".to_string());
                set("CommitmentDiscountType", "capacity commitment".to_string());
                set("CommitmentDiscountQuantity", decimal(line.pricing_quantity_micros.into()));
                set("CommitmentDiscountUnit", line.pricing_unit.clone());
                set("CapacityReservationId", cmt.to_string());
                set("ResourceId", cmt.to_string());
                set("ResourceType", "commitment".to_string());
                set("SkuId", sku(meter, &line.dimension));
                set("SkuMeter", meter.to_string());
                set("SkuPriceId", format!("commitment:{}", sku(meter, &line.dimension)));
                return in_order(row);
            }
            set("PricingCategory", "Standard".to_string());
            if line.category != ChargeCategory::Usage {
                // The support tier (or another purchase without a meter).
                set("ChargeFrequency", "Recurring".to_string());
                let what = if meter.is_empty() { "support" } else { meter };
                set("SkuId", sku(what, &line.dimension));
                set("SkuMeter", what.to_string());
                set("SkuPriceId", sku(what, &line.dimension));
                return in_order(row);
            }
            set("ChargeFrequency", "Usage-Based".to_string());
            set("ConsumedQuantity", decimal(line.consumed_quantity_micros.into()));
            set("ConsumedUnit", line.consumed_unit.clone());
            set("SkuId", sku(meter, &line.dimension));
            set("SkuMeter", meter.to_string());
            if let Some(book) = &line.price_book_id {
                set("SkuPriceId", format!("{book}:{}", sku(meter, &line.dimension)));
            }
            if let Some(resource) = &line.resource_id {
                let mut recs: Vec<&UsageRecord> =
                    line.record_ids.iter().filter_map(|id| by_id.get(id).copied()).collect();
                recs.sort_by_key(|r| (r.start_at, &r.id));
                set("ResourceId", resource.clone());
                if let Some(r) = recs.first() {
                    set("ResourceType", r.resource_kind.clone());
                    set("SubAccountId", r.project_id.to_string());
                    set("SubAccountType", "Project".to_string());
                }
                // Later records' attributes win.
                let tags: BTreeMap<&str, &str> =
                    recs.iter().flat_map(|r| r.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))).collect();
                set("Tags", serde_json::to_string(&tags).unwrap_or_default());
            }
            in_order(row)
        })
        .collect()
}

/// The row's values in [`FOCUS_COLUMNS`] order (missing: empty).
fn in_order(mut row: HashMap<&'static str, String>) -> Vec<String> {
    FOCUS_COLUMNS.iter().map(|c| row.remove(c).unwrap_or_default()).collect()
}

/// `2026-11-01T00:00:00Z` (fractions only when present).
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The FOCUS ChargeCategory value.
fn category(c: ChargeCategory) -> &'static str {
    match c {
        ChargeCategory::Usage => "Usage",
        ChargeCategory::Purchase => "Purchase",
        ChargeCategory::Tax => "Tax",
        ChargeCategory::Credit => "Credit",
        ChargeCategory::Adjustment => "Adjustment",
    }
}

/// CSV text (RFC 4180): a header line, then the rows; lines end with CRLF; a field with a
/// comma, a double quote, CR or LF is quoted, its quotes doubled.
pub fn to_csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let mut line = |fields: &mut dyn Iterator<Item = &str>| {
        for (i, f) in fields.enumerate() {
            if i > 0 {
                out.push(',');
            }
            if f.contains([',', '"', '\r', '\n']) {
                out.push('"');
                out.push_str(&f.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(f);
            }
        }
        out.push_str("\r\n");
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Columns of [`invoice_csv`].
const INVOICE_COLUMNS: &[&str] = &[
    "number",
    "category",
    "meter",
    "dimension",
    "description",
    "consumed_quantity",
    "consumed_unit",
    "pricing_quantity",
    "pricing_unit",
    "unit_price",
    "amount",
    "rounding",
    "record_count",
];

/// A plain CSV of the invoice's lines: quantities as exact decimals, money with six
/// decimals in the invoice's currency.
pub fn invoice_csv(invoice: &Invoice) -> String {
    let rows: Vec<Vec<String>> = invoice.lines.iter().map(invoice_row).collect();
    to_csv(INVOICE_COLUMNS, &rows)
}

fn invoice_row(l: &InvoiceLine) -> Vec<String> {
    let rounding = match l.rounding {
        Rounding::HalfUp => "half_up",
        Rounding::Up => "up",
        Rounding::Down => "down",
    };
    vec![
        l.number.to_string(),
        category(l.category).to_string(),
        l.meter.map_or("", Meter::as_str).to_string(),
        l.dimension.clone(),
        l.description.clone(),
        decimal(l.consumed_quantity_micros.into()),
        l.consumed_unit.clone(),
        decimal(l.pricing_quantity_micros.into()),
        l.pricing_unit.clone(),
        money(l.unit_price_micros),
        money(l.amount_micros),
        rounding.to_string(),
        l.record_ids.len().to_string(),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rating::fixtures::*;
    use crate::rating::money::parse_micros;
    use crate::rating::{RatingInput, rate};
    use plinth_api::*;

    pub(crate) const ACCT: FocusAccount<'static> = FocusAccount {
        billing_account_id: "tnt_t",
        billing_account_name: "Tenant T",
        invoice_issuer: "Plinth Cloud Ltd",
        provider: "Plinth",
        region_id: "eu-1",
        region_name: "Europe 1",
    };

    fn col(name: &str) -> usize {
        FOCUS_COLUMNS.iter().position(|c| *c == name).unwrap()
    }

    /// Σ BilledCost of the rows, parsed back to micros.
    pub(crate) fn billed_sum(rows: &[Vec<String>]) -> i128 {
        rows.iter().map(|r| parse_micros(&r[col("BilledCost")]).unwrap()).sum()
    }

    #[test]
    fn billed_cost_sums_to_the_total_with_everything_on_the_invoice() {
        // c1.small at 0.07 USD/hour, rounded up; three instances with 7 s, 11 s and 13 s
        // (awkward thirds), one long one partly covered by a commitment; GPU usage on a
        // volume price; support; two credits, both used up (a partial draw would leave a
        // total of zero, see the next test).
        let books = [book(
            "pb_1",
            day(1),
            "USD",
            vec![
                flat(Meter::RunningSeconds, None, 70_000, Rounding::Up),
                tiered(
                    Meter::GpuSeconds,
                    ChargeModel::Volume,
                    vec![tier(Some(10), 3_000_000), tier(None, 2_700_001)],
                    "hour",
                    3600,
                ),
            ],
        )];
        let records = [
            rec(1, "ins_a", Meter::RunningSeconds, "c1.small", at(2, 1), 7, 1),
            rec(2, "ins_bb", Meter::RunningSeconds, "c1.small", at(2, 2), 11, 1),
            rec(3, "ins_c", Meter::RunningSeconds, "c1.small", at(2, 3), 13, 1),
            rec(4, "ins_d", Meter::RunningSeconds, "c1.small", at(3, 0), 50 * 3600 + 17, 1),
            rec(5, "ins_a", Meter::GpuSeconds, "h100", at(4, 0), 7 * 3600 + 1, 2),
            rec(6, "ins_bb", Meter::GpuSeconds, "h100", at(4, 0), 3 * 3600 + 5, 1),
        ];
        let cmts = [commitment("cmt_a", Meter::RunningSeconds, "c1.small", 1, at(3, 10), at(3, 20), 33_333)];
        let grants = [grant("cr_a", 1_000_001, 0, 0), grant("cr_b", 2_500_000, 0, 1)];
        let tier = SupportTier { name: "business".into(), basis_points: 333, minimum_micros: 0 };
        let r = rate(&RatingInput {
            commitments: &cmts,
            credits: &grants,
            support: Some(&tier),
            ..input(&records, &books)
        })
        .unwrap();
        let mut inv = invoice(&r);
        assert!(r.total_micros > 0);
        let rows = focus_rows(&inv, &records, &ACCT);
        assert!(rows.iter().all(|row| row.len() == FOCUS_COLUMNS.len()));
        // 4 resources on c1.small, 2 on h100, commitment, support, 2 credits.
        assert_eq!(rows.len(), 10);
        assert_eq!(billed_sum(&rows), i128::from(r.total_micros));
        assert_eq!(billed_sum(&rows), rows.iter().map(|r| parse_micros(&r[col("EffectiveCost")]).unwrap()).sum());

        // Usage rows: resource, project, tags, exact quantities.
        let a = rows
            .iter()
            .find(|row| row[col("ResourceId")] == "ins_a" && row[col("SkuId")] == "running_seconds:c1.small")
            .unwrap();
        assert_eq!(a[col("ChargeCategory")], "Usage");
        assert_eq!(a[col("ChargeFrequency")], "Usage-Based");
        assert_eq!(a[col("ConsumedQuantity")], "7");
        assert_eq!(a[col("ConsumedUnit")], "second");
        assert_eq!(a[col("SubAccountId")], "prj_1");
        assert_eq!(a[col("ResourceType")], "instance");
        assert_eq!(a[col("SkuPriceId")], "pb_1:running_seconds:c1.small");
        assert_eq!(a[col("ChargePeriodStart")], "2026-11-01T00:00:00Z");
        assert_eq!(a[col("BillingPeriodEnd")], "2026-12-01T00:00:00Z");
        assert_eq!(a[col("InvoiceId")], "inv_draft");
        assert_eq!(a[col("ServiceCategory")], "Compute");
        let tags: serde_json::Value = serde_json::from_str(&a[col("Tags")]).unwrap();
        assert_eq!(tags, serde_json::json!({"host": "hst_one", "shape": "c1.small"}));
        // The covered line's list cost exceeds what it billed.
        let d = rows.iter().find(|row| row[col("ResourceId")] == "ins_d").unwrap();
        assert!(parse_micros(&d[col("ListCost")]) > parse_micros(&d[col("BilledCost")]));

        let gpu = rows.iter().find(|row| row[col("SkuId")] == "gpu_seconds:h100").unwrap();
        assert!(gpu[col("ChargeDescription")].contains("(17.001944 hours, volume tier at 2.700001 USD/hour)"));

        let cmt = rows.iter().find(|row| row[col("CommitmentDiscountId")] == "cmt_a").unwrap();
        assert_eq!(cmt[col("ChargeCategory")], "Purchase");
        assert_eq!(cmt[col("ChargeFrequency")], "Recurring");
        assert_eq!(cmt[col("PricingCategory")], "Committed");
        assert_eq!(cmt[col("CapacityReservationId")], "cmt_a");
        assert_eq!(cmt[col("PricingQuantity")], "10");
        assert_eq!(cmt[col("ConsumedQuantity")], "");

        let credits: Vec<&Vec<String>> = rows.iter().filter(|row| row[col("ChargeCategory")] == "Credit").collect();
        assert_eq!(credits.len(), 2);
        assert_eq!(credits[0][col("BilledCost")], "-1.000001");
        assert_eq!(credits[0][col("ChargeFrequency")], "One-Time");
        assert_eq!(credits[0][col("ListCost")], "0.000000");
        assert_eq!(credits[0][col("PricingQuantity")], "");
        assert!(credits.iter().all(|c| c[col("ChargeClass")].is_empty()));

        // A finalized invoice is identified by its number; a credit note is a correction.
        inv.number = Some("INV-000042".into());
        inv.status = InvoiceStatus::Finalized;
        inv.kind = InvoiceKind::CreditNote;
        let rows = focus_rows(&inv, &records, &ACCT);
        assert!(
            rows.iter().all(|row| row[col("InvoiceId")] == "INV-000042" && row[col("ChargeClass")] == "Correction")
        );
    }

    #[test]
    fn billed_cost_sums_to_zero_when_credits_cover_everything() {
        let books = [book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 123_457, Rounding::HalfUp)])];
        let records = [
            rec(1, "ins_a", Meter::RunningSeconds, "c1", day(2), 1001, 1),
            rec(2, "ins_b", Meter::RunningSeconds, "c1", day(2), 2002, 1),
        ];
        let grants = [grant("cr_a", 1_000_000_000, 0, 0)];
        let r = rate(&RatingInput { credits: &grants, ..input(&records, &books) }).unwrap();
        assert_eq!(r.total_micros, 0);
        assert_eq!(billed_sum(&focus_rows(&invoice(&r), &records, &ACCT)), 0);
    }

    #[test]
    fn csv_quotes_commas_quotes_and_newlines() {
        let rows = vec![
            vec!["plain".to_string(), "a,b".to_string(), "say \"hi\"".to_string()],
            vec!["line\nbreak".to_string(), "cr\rhere".to_string(), String::new()],
        ];
        let csv = to_csv(&["x", "y", "z"], &rows);
        assert_eq!(csv, "x,y,z\r\nplain,\"a,b\",\"say \"\"hi\"\"\"\r\n\"line\nbreak\",\"cr\rhere\",\r\n");
    }

    #[test]
    fn the_invoice_csv_has_one_row_per_line() {
        let books = [book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 40_000, Rounding::HalfUp)])];
        let records = [rec(1, "ins_a", Meter::RunningSeconds, "c1.small", day(2), 45_000, 1)];
        let grants = [grant("cr_a", 100_000, 0, 0)];
        let r = rate(&RatingInput { credits: &grants, ..input(&records, &books) }).unwrap();
        let csv = invoice_csv(&invoice(&r));
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], INVOICE_COLUMNS.join(","));
        assert_eq!(
            lines[1],
            "1,Usage,running_seconds,c1.small,running_seconds of shape c1.small (12.5 hours at 0.040000 USD/hour),\
             45000,second,12.5,hour,0.040000,0.500000,half_up,1"
        );
        assert!(lines[2].starts_with(
            "2,Credit,,cr_a,credit cr_a: grant cr_a (0.100000 of 0.100000 USD left),0,,0,,0.000000,-0.100000,down,0"
        ));
        assert_eq!(lines.len(), 4); // two rows and the empty string after the last CRLF
    }
}
