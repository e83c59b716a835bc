//! The per-resource breakdown of an invoice's usage lines (one piece per resource of a
//! line), with amounts split so that the pieces of a line sum exactly to the line.

use super::money::largest_remainder;
use super::price::quantity_micros;
use plinth_api::{ChargeCategory, InvoiceLine, UsageRecord, UsageRecordId};
use std::collections::{BTreeMap, HashMap};

/// Per-resource breakdown of one invoice's usage lines: each line split by `resource_id`
/// with amounts allocated by the largest-remainder method proportionally to each
/// resource's quantity, so the pieces of a line sum exactly to the line's amount (and
/// pricing quantity, and list amount). The weight is the resource's metered quantity (Σ of
/// its records' `quantity_micros`): minimums and commitment cover are properties of the
/// line, not kept per record, so they are shared in proportion. Pieces keep the line's
/// number and come in resource id order. Non-usage lines, and usage lines none of whose
/// records are given, are returned unchanged.
pub fn by_resource(lines: &[InvoiceLine], records: &[UsageRecord]) -> Vec<InvoiceLine> {
    let by_id: HashMap<&UsageRecordId, &UsageRecord> = records.iter().map(|r| (&r.id, r)).collect();
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let mut resources: BTreeMap<&str, Vec<&UsageRecord>> = BTreeMap::new();
        if line.category == ChargeCategory::Usage {
            for r in line.record_ids.iter().filter_map(|id| by_id.get(id)) {
                resources.entry(r.resource_id.as_str()).or_default().push(r);
            }
        }
        if resources.is_empty() {
            out.push(line.clone());
            continue;
        }
        let quantities: Vec<i128> =
            resources.values().map(|rs| rs.iter().map(|r| i128::from(quantity_micros(r).unwrap_or(0))).sum()).collect();
        let amounts = largest_remainder(line.amount_micros, &quantities);
        let pricing = largest_remainder(line.pricing_quantity_micros, &quantities);
        let list = line.list_amount_micros.map(|l| largest_remainder(l, &quantities));
        for (i, (resource, rs)) in resources.into_iter().enumerate() {
            let mut record_ids: Vec<UsageRecordId> = rs.iter().map(|r| r.id.clone()).collect();
            record_ids.sort();
            let consumed = quantities[i].clamp(i64::MIN.into(), i64::MAX.into());
            out.push(InvoiceLine {
                resource_id: Some(resource.to_string()),
                consumed_quantity_micros: i64::try_from(consumed).unwrap_or_default(),
                pricing_quantity_micros: pricing[i],
                amount_micros: amounts[i],
                list_amount_micros: list.as_ref().map(|l| l[i]),
                record_ids,
                ..line.clone()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::fixtures::*;
    use crate::rating::{RatingInput, rate};
    use plinth_api::{Meter, Rounding};

    #[test]
    fn pieces_sum_to_each_line_with_awkward_proportions() {
        // Three instances of 1 s, 1 s and 1 s at 100 USD/hour → 3 s = 0.083333 USD (half up),
        // split in thirds: 27778, 27778, 27777. A fourth instance on another shape is its
        // own line.
        let books =
            [book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 100_000_000, Rounding::HalfUp)])];
        let records = [
            rec(1, "ins_c", Meter::RunningSeconds, "c1", day(2), 1, 1),
            rec(2, "ins_a", Meter::RunningSeconds, "c1", day(3), 1, 1),
            rec(3, "ins_b", Meter::RunningSeconds, "c1", day(4), 1, 1),
            rec(4, "ins_a", Meter::RunningSeconds, "c2", day(4), 7, 1),
            rec(5, "ins_b", Meter::RunningSeconds, "c1", day(5), 0, 1),
        ];
        let grants = [grant("cr_a", 1_000, 0, 0)];
        let rated = rate(&RatingInput { credits: &grants, ..input(&records, &books) }).unwrap();
        assert_eq!(rated.lines[0].amount_micros, 83_333);
        let pieces = by_resource(&rated.lines, &records);
        // c1 → 3 pieces, c2 → 1, the credit line unchanged.
        assert_eq!(pieces.len(), 5);
        let c1: Vec<&InvoiceLine> = pieces.iter().filter(|p| p.number == 1).collect();
        assert_eq!(
            c1.iter().map(|p| p.resource_id.as_deref().unwrap()).collect::<Vec<_>>(),
            ["ins_a", "ins_b", "ins_c"]
        );
        assert_eq!(c1.iter().map(|p| p.amount_micros).collect::<Vec<_>>(), [27_778, 27_778, 27_777]);
        assert_eq!(c1[1].record_ids.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["use_000003", "use_000005"]);
        assert_eq!(c1.iter().map(|p| p.consumed_quantity_micros).sum::<i64>(), rated.lines[0].consumed_quantity_micros);
        assert_eq!(c1.iter().map(|p| p.pricing_quantity_micros).sum::<i64>(), rated.lines[0].pricing_quantity_micros);
        for line in &rated.lines {
            let sum: i64 = pieces.iter().filter(|p| p.number == line.number).map(|p| p.amount_micros).sum();
            assert_eq!(sum, line.amount_micros, "line {}", line.number);
        }
        assert_eq!(pieces[4], rated.lines[2]);
    }

    #[test]
    fn lines_without_known_records_are_unchanged() {
        let books = [book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 1, Rounding::HalfUp)])];
        let records = [rec(1, "ins_a", Meter::RunningSeconds, "c1", day(2), 1, 1)];
        let rated = rate(&input(&records, &books)).unwrap();
        assert_eq!(by_resource(&rated.lines, &[]), rated.lines);
    }
}
