//! Tests of [`rate`] as a whole: line grouping, order, rounding, book and price choice, and
//! a property test of the invariants between lines, totals, credits and exports.

use super::fixtures::*;
use super::money::parse_micros;
use super::*;
use chrono::Duration;
use proptest::prelude::*;

const HOUR: i64 = 3600;

fn amounts(r: &Rated) -> Vec<i64> {
    r.lines.iter().map(|l| l.amount_micros).collect()
}

#[test]
fn flat_prices_round_once_per_line_by_its_rule() {
    // 1.8 micro-units per hour: each second costs 0.5 micro-units. Three 1 s records on one
    // line are 1.5 exactly: half up 2, up 2, down 1 (rounding per record would give 3, 3, 0).
    let books = [book(
        "pb_1",
        day(1),
        "USD",
        vec![
            flat(Meter::RunningSeconds, Some("half"), 1_800, Rounding::HalfUp),
            flat(Meter::RunningSeconds, Some("up"), 1_800, Rounding::Up),
            flat(Meter::RunningSeconds, Some("down"), 1_800, Rounding::Down),
            flat(Meter::RunningSeconds, Some("third"), 40_000, Rounding::Up),
        ],
    )];
    let mut records = Vec::new();
    for (i, dim) in ["half", "up", "down"].iter().enumerate() {
        for j in 0..3 {
            records.push(rec((i * 3 + j) as u32, "ins_a", Meter::RunningSeconds, dim, at(2, j as i64), 1, 1));
        }
    }
    // 0.04 USD/hour for 1 s = 11.11… micro-units: up gives 12.
    records.push(rec(20, "ins_a", Meter::RunningSeconds, "third", day(3), 1, 1));
    let r = rate(&input(&records, &books)).unwrap();
    let by_dim: Vec<(&str, i64, Rounding)> =
        r.lines.iter().map(|l| (l.dimension.as_str(), l.amount_micros, l.rounding)).collect();
    assert_eq!(
        by_dim,
        [
            ("down", 1, Rounding::Down),
            ("half", 2, Rounding::HalfUp),
            ("third", 12, Rounding::Up),
            ("up", 2, Rounding::Up)
        ]
    );
    assert_eq!(r.lines[1].record_ids.len(), 3);
    assert_eq!(r.subtotal_micros, 17);
    assert_eq!(r.total_micros, 17);
}

#[test]
fn negative_amounts_round_toward_the_infinities_and_the_total_stays_at_zero() {
    // A correction of −3 s at 0.5 micro-units per second is −1.5: half up −1 (ties toward
    // +∞), up −1 (toward +∞), down −2 (toward −∞).
    let mut records = Vec::new();
    for (i, rule) in [Rounding::HalfUp, Rounding::Up, Rounding::Down].into_iter().enumerate() {
        let books = [book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 1_800, rule)])];
        let mut r = rec(i as u32, "ins_a", Meter::RunningSeconds, "c1", day(2), 3, 1);
        r.quantity_micros = Some(-3_000_000);
        r.first = false;
        records.push(r.clone());
        let rated = rate(&input(std::slice::from_ref(&r), &books)).unwrap();
        assert_eq!(rated.lines[0].amount_micros, [-1, -1, -2][i], "{rule:?}");
        assert_eq!(rated.subtotal_micros, [-1, -1, -2][i]);
        assert_eq!(rated.total_micros, 0);
        assert_eq!(rated.lines[0].pricing_quantity_micros, -833); // −3 s = −0.000833 h
    }
}

#[test]
fn a_minimum_applies_per_start_not_to_continuations() {
    // 3600 USD per hour: 1 USD per second.
    let mut price = flat(Meter::RunningSeconds, None, 3_600_000_000, Rounding::HalfUp);
    price.min_seconds_per_start = 60;
    let books = [book("pb_1", day(1), "USD", vec![price])];
    // A 10 s run bills 60 s: 60 USD.
    let start = rec(1, "ins_a", Meter::RunningSeconds, "c1", day(2), 10, 1);
    let r = rate(&input(std::slice::from_ref(&start), &books)).unwrap();
    assert_eq!(r.lines[0].amount_micros, 60_000_000);
    assert_eq!(r.lines[0].consumed_quantity_micros, 10_000_000);
    assert_eq!(r.lines[0].pricing_quantity_micros, 16_667); // 60 s = 0.016667 h
    assert!(r.lines[0].description.contains("minimum 60 s per start applied"), "{}", r.lines[0].description);
    // A continuation after a period cut-off bills what it ran.
    let cont = UsageRecord { first: false, ..start.clone() };
    let r = rate(&input(std::slice::from_ref(&cont), &books)).unwrap();
    assert_eq!(r.lines[0].amount_micros, 10_000_000);
    assert!(!r.lines[0].description.contains("minimum"));
    // Counters never get a minimum.
    let mut bytes = rec(2, "ins_a", Meter::EgressBytes, "", day(2), 0, 1);
    bytes.quantity_micros = Some(5);
    let books = [book(
        "pb_1",
        day(1),
        "USD",
        vec![Price { min_seconds_per_start: 60, ..flat(Meter::EgressBytes, None, 1_000_000, Rounding::Up) }],
    )];
    let r = rate(&input(&[bytes], &books)).unwrap();
    assert_eq!(r.lines[0].amount_micros, 1); // 5e-6 bytes / 3600 × 1 USD, rounded up
}

#[test]
fn the_book_version_is_chosen_by_record_start() {
    let books = [
        book("pb_2", day(15), "USD", vec![flat(Meter::RunningSeconds, None, 2_000_000, Rounding::HalfUp)]),
        book(
            "pb_1",
            day(1) - Duration::days(100),
            "USD",
            vec![flat(Meter::RunningSeconds, None, 1_000_000, Rounding::HalfUp)],
        ),
    ];
    // One record starts just before the change and runs across it: the old price.
    let records = [
        rec(1, "ins_a", Meter::RunningSeconds, "c1", day(15) - Duration::hours(1), 2 * HOUR, 1),
        rec(2, "ins_a", Meter::RunningSeconds, "c1", day(15), HOUR, 1),
        rec(3, "ins_b", Meter::RunningSeconds, "c1", day(20), HOUR, 1),
    ];
    let r = rate(&input(&records, &books)).unwrap();
    let lines: Vec<(&str, i64, usize)> = r
        .lines
        .iter()
        .map(|l| (l.price_book_id.as_ref().unwrap().as_str(), l.amount_micros, l.record_ids.len()))
        .collect();
    assert_eq!(lines, [("pb_1", 2_000_000, 1), ("pb_2", 4_000_000, 2)]);
    assert_eq!(r.lines.iter().map(|l| l.number).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn the_dimension_price_wins_over_the_wildcard_in_lines() {
    let books = [book(
        "pb_1",
        day(1),
        "USD",
        vec![
            flat(Meter::RunningSeconds, None, 1_000_000, Rounding::HalfUp),
            flat(Meter::RunningSeconds, Some("c1.large"), 4_000_000, Rounding::HalfUp),
        ],
    )];
    let records = [
        rec(1, "ins_a", Meter::RunningSeconds, "c1.small", day(2), HOUR, 1),
        rec(2, "ins_b", Meter::RunningSeconds, "c1.large", day(2), HOUR, 1),
    ];
    let r = rate(&input(&records, &books)).unwrap();
    assert_eq!(
        r.lines.iter().map(|l| (l.dimension.as_str(), l.amount_micros)).collect::<Vec<_>>(),
        [("c1.large", 4_000_000), ("c1.small", 1_000_000)]
    );
}

#[test]
fn unpriced_usage_gets_a_zero_line_with_its_records() {
    let books = [book("pb_1", day(1), "EUR", vec![flat(Meter::RunningSeconds, None, 1_000_000, Rounding::HalfUp)])];
    let records = [
        rec(3, "ins_a", Meter::GpuSeconds, "h100", day(2), HOUR, 2),
        rec(1, "ins_b", Meter::GpuSeconds, "h100", day(3), HOUR, 1),
        rec(2, "ins_a", Meter::RunningSeconds, "c1", day(2), HOUR, 1),
        // Before the first book version: unpriced too.
        rec(4, "ins_a", Meter::RunningSeconds, "c1", day(1) - Duration::days(1), HOUR, 1),
    ];
    let r = rate(&input(&records, &books)).unwrap();
    assert_eq!(r.currency, "EUR");
    assert_eq!(r.lines.len(), 3);
    // Meter order: running (priced, then unpriced), then gpu.
    let (priced, unpriced_running, gpu) = (&r.lines[0], &r.lines[1], &r.lines[2]);
    assert_eq!(priced.amount_micros, 1_000_000);
    assert_eq!(unpriced_running.price_book_id, None);
    assert_eq!(unpriced_running.record_ids.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["use_000004"]);
    assert_eq!(gpu.meter, Some(Meter::GpuSeconds));
    assert_eq!(gpu.amount_micros, 0);
    assert_eq!(gpu.rounding, Rounding::Down);
    assert_eq!(gpu.pricing_unit, "gpu-second");
    assert_eq!(gpu.consumed_quantity_micros, 3 * HOUR * 1_000_000);
    assert_eq!(gpu.pricing_quantity_micros, 3 * HOUR * 1_000_000);
    assert_eq!(gpu.record_ids.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["use_000001", "use_000003"]);
    assert_eq!(gpu.description, "gpu_seconds of GPU class h100: not priced (10800 gpu-seconds)");
    assert_eq!(r.total_micros, 1_000_000);
}

#[test]
fn mixed_currencies_and_open_records_are_errors() {
    let books = [
        book("pb_1", day(1), "USD", vec![flat(Meter::RunningSeconds, None, 1, Rounding::HalfUp)]),
        book("pb_2", day(10), "EUR", vec![flat(Meter::RunningSeconds, None, 1, Rounding::HalfUp)]),
    ];
    let records = [
        rec(1, "ins_a", Meter::RunningSeconds, "c1", day(2), HOUR, 1),
        rec(2, "ins_a", Meter::RunningSeconds, "c1", day(12), HOUR, 1),
    ];
    let err = rate(&input(&records, &books)).unwrap_err();
    assert_eq!(
        err,
        RatingError::MixedCurrencies { record: records[1].id.clone(), expected: "USD".into(), found: "EUR".into() }
    );
    // One currency per period is fine even when another version has another.
    assert_eq!(rate(&input(&records[..1], &books)).unwrap().currency, "USD");
    let mut open = records[0].clone();
    open.end_at = None;
    open.quantity_micros = None;
    assert!(matches!(rate(&input(&[open], &books)), Err(RatingError::OpenRecord { .. })));
}

#[test]
fn currency_falls_back_to_the_book_then_the_default() {
    let books = [book("pb_1", day(3), "EUR", vec![])];
    assert_eq!(rate(&input(&[], &books)).unwrap().currency, "EUR");
    assert_eq!(rate(&input(&[], &[])).unwrap().currency, "USD");
}

#[test]
fn lines_are_numbered_in_meter_then_dimension_order() {
    let books = [book("pb_1", day(1), "USD", vec![])];
    let records = [
        rec(1, "ins_a", Meter::EgressBytes, "", day(2), 0, 1),
        rec(2, "ins_a", Meter::RunningSeconds, "b", day(2), 1, 1),
        rec(3, "ins_a", Meter::AllocatedSeconds, "z", day(2), 1, 1),
        rec(4, "ins_a", Meter::RunningSeconds, "a", day(2), 1, 1),
        rec(5, "ins_a", Meter::DiskGibSeconds, "local", day(2), 1, 10),
    ];
    let r = rate(&input(&records, &books)).unwrap();
    let order: Vec<(u32, &str, &str)> =
        r.lines.iter().map(|l| (l.number, l.meter.unwrap().as_str(), l.dimension.as_str())).collect();
    assert_eq!(
        order,
        [
            (1, "allocated_seconds", "z"),
            (2, "running_seconds", "a"),
            (3, "running_seconds", "b"),
            (4, "disk_gib_seconds", "local"),
            (5, "egress_bytes", "")
        ]
    );
    assert!(amounts(&r).iter().all(|&a| a == 0));
}

/// Random inputs for the property test.
#[derive(Debug, Clone)]
struct Case {
    records: Vec<UsageRecord>,
    books: Vec<PriceBook>,
    commitments: Vec<Commitment>,
    credits: Vec<CreditGrant>,
    support: Option<SupportTier>,
}

fn rounding() -> impl Strategy<Value = Rounding> {
    prop_oneof![Just(Rounding::HalfUp), Just(Rounding::Up), Just(Rounding::Down)]
}

fn price_strategy(meter: Meter, dim: Option<&'static str>) -> impl Strategy<Value = Price> {
    (0..3u8, 0i64..5_000_000, rounding(), 0i64..120, 1i64..10, 0i64..5_000_000).prop_map(
        move |(model, unit, rounding, min, bound, second)| {
            let mut p = flat(meter, dim, unit, rounding);
            p.min_seconds_per_start = min;
            if model > 0 {
                p.model = if model == 1 { ChargeModel::Graduated } else { ChargeModel::Volume };
                p.tiers = vec![tier(Some(bound), unit), tier(Some(bound * 3), second), tier(None, unit / 3)];
            }
            p
        },
    )
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let meters = [Meter::RunningSeconds, Meter::GpuSeconds, Meter::EgressBytes, Meter::DiskGibSeconds];
    let record = (0..4usize, 0..2usize, 0..3usize, 0i64..29 * 86_400, 0i64..3 * 86_400_000_000, 1i64..4, any::<bool>());
    let records = prop::collection::vec(record, 0..12).prop_map(move |rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (m, d, res, start, us, mult, first))| {
                let start = day(1) + Duration::seconds(start);
                let us = us.min((day(31) - start).num_microseconds().unwrap());
                let meter = meters[m];
                let mut r =
                    rec_us(i as u32, ["ins_a", "ins_bb", "ins_ccc"][res], meter, ["c1", "c2"][d], start, us, mult);
                r.first = first;
                if meter == Meter::EgressBytes {
                    r.end_at = Some(start);
                    r.quantity_micros = Some(us * 1000);
                }
                r
            })
            .collect::<Vec<_>>()
    });
    let prices = (
        price_strategy(Meter::RunningSeconds, None),
        price_strategy(Meter::RunningSeconds, Some("c2")),
        price_strategy(Meter::GpuSeconds, Some("c1")),
        price_strategy(Meter::EgressBytes, None),
        0u32..30,
        price_strategy(Meter::RunningSeconds, None),
    );
    let books = prices.prop_map(|(a, b, c, mut e, change, a2)| {
        e.pricing_unit = "GB".into();
        e.units_per_pricing_unit = 1_000_000_000;
        let mut v = vec![book("pb_1", day(1), "USD", vec![a, b, c, e])];
        if change > 0 {
            v.push(book("pb_2", day(1 + change), "USD", vec![a2]));
        }
        v
    });
    let commitment_s = (0..2usize, 0..2usize, 0i64..4, 0u32..40, 1u32..40, 0i64..3_000_000);
    let commitments = prop::collection::vec(commitment_s, 0..3).prop_map(|cs| {
        cs.into_iter()
            .enumerate()
            .map(|(i, (m, d, count, s, len, hourly))| {
                let meter = [Meter::RunningSeconds, Meter::GpuSeconds][m];
                let start = day(1) + Duration::hours(i64::from(s) * 17 - 100);
                commitment(
                    &format!("cmt_{i}"),
                    meter,
                    ["c1", "c2"][d],
                    count,
                    start,
                    start + Duration::hours(i64::from(len) * 23),
                    hourly,
                )
            })
            .collect::<Vec<_>>()
    });
    let credit_s = (0i64..200_000_000, 0i64..200_000_000, 0i32..3, prop::option::of(0u32..40), 0u32..40, any::<bool>());
    let credits = prop::collection::vec(credit_s, 0..4).prop_map(|gs| {
        gs.into_iter()
            .enumerate()
            .map(|(i, (amount, used, priority, expires, effective, eur))| {
                let mut g = grant(&format!("cr_{i}"), amount, used.min(amount + 1), priority);
                g.expires_at = expires.map(|d| day(1) + Duration::days(i64::from(d) - 5));
                g.effective_at = day(1) + Duration::days(i64::from(effective) - 10);
                if eur {
                    g.currency = "EUR".into();
                }
                g
            })
            .collect::<Vec<_>>()
    });
    let support = prop::option::of((0i64..3000, 0i64..10_000_000))
        .prop_map(|s| s.map(|(bp, min)| SupportTier { name: "tier".into(), basis_points: bp, minimum_micros: min }));
    (records, books, commitments, credits, support).prop_map(|(records, books, commitments, credits, support)| Case {
        records,
        books,
        commitments,
        credits,
        support,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn lines_totals_credits_and_exports_agree(case in case_strategy()) {
        let rated = rate(&RatingInput {
            commitments: &case.commitments,
            credits: &case.credits,
            support: case.support.as_ref(),
            ..input(&case.records, &case.books)
        }).unwrap();
        let sum: i64 = rated.lines.iter().map(|l| l.amount_micros).sum();
        prop_assert_eq!(sum, rated.subtotal_micros + rated.credits_micros);
        // Prices and quantities are non-negative here, so nothing is clamped.
        prop_assert!(rated.subtotal_micros >= 0);
        prop_assert_eq!(rated.total_micros, rated.subtotal_micros + rated.credits_micros);
        prop_assert!(rated.total_micros >= 0);
        let non_credit: i64 =
            rated.lines.iter().filter(|l| l.category != ChargeCategory::Credit).map(|l| l.amount_micros).sum();
        prop_assert_eq!(non_credit, rated.subtotal_micros);
        prop_assert_eq!(rated.lines.iter().map(|l| l.number).collect::<Vec<_>>(), (1..=rated.lines.len() as u32).collect::<Vec<_>>());

        // Credits: positive draws within what each grant had left, matching the credit lines.
        let drawn: i64 = rated.credit_draws.iter().map(|d| d.1).sum();
        prop_assert_eq!(drawn, -rated.credits_micros);
        for (id, amount) in &rated.credit_draws {
            let g = case.credits.iter().find(|g| &g.id == id).unwrap();
            prop_assert!(*amount > 0 && *amount <= g.amount_micros - g.used_micros);
            prop_assert_eq!(&g.currency, "USD");
        }
        // Owed money is drawn as long as eligible grants have some left.
        if rated.total_micros > 0 {
            for g in &case.credits {
                let eligible = g.currency == "USD" && g.effective_at < day(31) && g.expires_at.is_none_or(|e| e > day(1));
                if eligible && g.amount_micros > g.used_micros {
                    let d = rated.credit_draws.iter().find(|d| d.0 == g.id).map_or(0, |d| d.1);
                    prop_assert_eq!(d, g.amount_micros - g.used_micros);
                }
            }
        }

        // Usage lines: consumed quantity is the records' sum.
        let consumed: i64 = rated.lines.iter().filter(|l| l.category == ChargeCategory::Usage).map(|l| l.consumed_quantity_micros).sum();
        prop_assert_eq!(consumed, case.records.iter().map(|r| r.quantity_micros.unwrap()).sum::<i64>());

        // Per-resource pieces sum to their line.
        let pieces = by_resource(&rated.lines, &case.records);
        for line in &rated.lines {
            let mine: Vec<&InvoiceLine> = pieces.iter().filter(|p| p.number == line.number).collect();
            prop_assert_eq!(mine.iter().map(|p| p.amount_micros).sum::<i64>(), line.amount_micros);
            prop_assert_eq!(mine.iter().map(|p| p.pricing_quantity_micros).sum::<i64>(), line.pricing_quantity_micros);
            prop_assert_eq!(mine.iter().map(|p| p.record_ids.len()).sum::<usize>(), line.record_ids.len());
        }

        // FOCUS BilledCost sums to the total.
        let rows = focus_rows(&invoice(&rated), &case.records, &focus::tests::ACCT);
        prop_assert_eq!(rows.len(), pieces.len());
        let billed_col = FOCUS_COLUMNS.iter().position(|c| *c == "BilledCost").unwrap();
        let billed: i128 = rows.iter().map(|r| parse_micros(&r[billed_col]).unwrap()).sum();
        prop_assert_eq!(billed, i128::from(rated.total_micros));
        prop_assert_eq!(focus::tests::billed_sum(&rows), billed);
    }
}
