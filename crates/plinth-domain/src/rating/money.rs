//! Exact money arithmetic for rating: rounding an exact rational once, by a line's
//! [`Rounding`]; the largest-remainder split of an integer amount; decimal text of micros.
//!
//! Amounts stay exact rationals `num / den` in `i128` until a line's one rounding.
//! Rounding is directional, also for negative amounts (corrections, credits):
//! `Up` is toward +∞ (ceiling), `Down` toward −∞ (floor), `HalfUp` to the nearest with
//! ties toward +∞. So −2.5 rounds to −2 (`HalfUp`), −2 (`Up`) and −3 (`Down`): the
//! direction always favours the same party, whatever the sign.

use super::RatingError;
use plinth_api::Rounding;

/// Micro-units per unit.
pub(crate) const MICROS: i128 = 1_000_000;

/// `num / den` rounded to an integer by `rule` (`den` must be positive).
pub(crate) fn round_div(num: i128, den: i128, rule: Rounding) -> i128 {
    debug_assert!(den > 0);
    let floor = num.div_euclid(den);
    let rem = num.rem_euclid(den); // 0 <= rem < den
    match rule {
        Rounding::Down => floor,
        Rounding::Up => floor + i128::from(rem != 0),
        // rem >= den - rem, i.e. rem / den >= 1/2, without doubling (no overflow).
        Rounding::HalfUp => floor + i128::from(rem >= den - rem),
    }
}

/// The value as an `i64`, or [`RatingError::Overflow`].
pub(crate) fn to_i64(v: i128) -> Result<i64, RatingError> {
    i64::try_from(v).map_err(|_| RatingError::Overflow)
}

/// Checked `a * b`.
pub(crate) fn mul(a: i128, b: i128) -> Result<i128, RatingError> {
    a.checked_mul(b).ok_or(RatingError::Overflow)
}

/// Checked `a + b`.
pub(crate) fn add(a: i128, b: i128) -> Result<i128, RatingError> {
    a.checked_add(b).ok_or(RatingError::Overflow)
}

/// Splits `total` into parts proportional to `weights` that sum exactly to `total`
/// (largest-remainder method): every part gets the floor of its exact share of `|total|`,
/// and the units left over go one each to the largest remainders (ties: the earlier
/// weight). Negative weights count as zero; if no weight is positive, all count equally.
/// A negative `total` is split as its absolute value, then negated.
pub(crate) fn largest_remainder(total: i64, weights: &[i128]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut w: Vec<i128> = weights.iter().map(|&w| w.max(0)).collect();
    if w.iter().all(|&w| w == 0) {
        w.iter_mut().for_each(|w| *w = 1);
    }
    let abs = i128::from(total).abs();
    if abs == 0 {
        return vec![0; w.len()];
    }
    // Keep n × |total| × weight inside i128: coarsen huge weights (the parts still sum
    // exactly; only the proportions get coarser). 1 × |total| × n always fits.
    let n = i128::try_from(w.len()).unwrap_or(i128::MAX);
    let max = w.iter().copied().max().unwrap_or(1);
    let mut shift = 0;
    while (max >> shift).checked_mul(abs).and_then(|x| x.checked_mul(n)).is_none() {
        shift += 1;
    }
    let mut w: Vec<i128> = w.iter().map(|&x| x >> shift).collect();
    if w.iter().all(|&x| x == 0) {
        w.iter_mut().for_each(|x| *x = 1);
    }
    let sum: i128 = w.iter().sum();
    let mut parts: Vec<i128> = Vec::with_capacity(w.len());
    let mut rems: Vec<(i128, usize)> = Vec::with_capacity(w.len());
    for (i, &wi) in w.iter().enumerate() {
        let exact = abs * wi; // fits: checked above
        parts.push(exact / sum);
        rems.push((exact % sum, i));
    }
    let left = abs - parts.iter().sum::<i128>();
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in rems.iter().take(usize::try_from(left).unwrap_or(0)) {
        parts[i] += 1;
    }
    let sign = if total < 0 { -1 } else { 1 };
    // Each part is at most |total|, so it fits in i64 (|i64::MIN| is split as i128).
    parts.into_iter().map(|p| i64::try_from(sign * p).unwrap_or(if sign < 0 { i64::MIN } else { i64::MAX })).collect()
}

/// Exact decimal text of millionths, without trailing zeros: 12_500_000 → `12.5`,
/// 3_000_000 → `3`, −250_000 → `-0.25`.
pub fn decimal(micros: i128) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (int, frac) = (abs / 1_000_000, abs % 1_000_000);
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{frac:06}");
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

/// Money text with exactly six decimals: 12_345_678 → `12.345678`, −500_000 → `-0.500000`.
pub fn money(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// Parses decimal text (as [`decimal`] and [`money`] write it) back to millionths; `None`
/// when malformed or finer than a millionth.
pub fn parse_micros(s: &str) -> Option<i128> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || frac.len() > 6 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: i128 = int.parse().ok()?;
    let frac: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().ok()? };
    let v = int.checked_mul(MICROS)?.checked_add(frac)?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rounding_is_directional_for_both_signs() {
        use Rounding::*;
        // 2.5, 2.4, 2.6 and their negatives, as n / 10.
        let cases = [
            (25, HalfUp, 3),
            (25, Up, 3),
            (25, Down, 2),
            (24, HalfUp, 2),
            (24, Up, 3),
            (26, HalfUp, 3),
            (26, Down, 2),
            (-25, HalfUp, -2),
            (-25, Up, -2),
            (-25, Down, -3),
            (-24, HalfUp, -2),
            (-26, HalfUp, -3),
            (-24, Up, -2),
            (-24, Down, -3),
            (20, Up, 2),
            (-20, Down, -2),
            (0, Up, 0),
        ];
        for (num, rule, want) in cases {
            assert_eq!(round_div(num, 10, rule), want, "{num}/10 {rule:?}");
        }
    }

    #[test]
    fn largest_remainder_gives_leftovers_to_the_largest_remainders() {
        // 100 in thirds: 33.33 each, the first (tie) gets the extra unit.
        assert_eq!(largest_remainder(100, &[1, 1, 1]), vec![34, 33, 33]);
        // 10 by 1:2:3 → 1.67, 3.33, 5 → 2, 3, 5.
        assert_eq!(largest_remainder(10, &[1, 2, 3]), vec![2, 3, 5]);
        assert_eq!(largest_remainder(-10, &[1, 2, 3]), vec![-2, -3, -5]);
        // 10 by 3:2:1 → 5, 3.33, 1.67: the last has the largest remainder.
        assert_eq!(largest_remainder(10, &[3, 2, 1]), vec![5, 3, 2]);
        // 100 by 7:11:13 → 22.58, 35.48, 41.94: the two units left go to the 3rd and the 1st.
        assert_eq!(largest_remainder(100, &[7, 11, 13]), vec![23, 35, 42]);
        assert_eq!(largest_remainder(7, &[0, 0]), vec![4, 3]);
        assert_eq!(largest_remainder(7, &[0, 5]), vec![0, 7]);
        assert_eq!(
            largest_remainder(i64::MAX, &[i128::MAX / 3, i128::MAX / 3]).iter().map(|&x| x as i128).sum::<i128>(),
            i64::MAX as i128
        );
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(12_500_000), "12.5");
        assert_eq!(decimal(3_000_000), "3");
        assert_eq!(decimal(-250_000), "-0.25");
        assert_eq!(decimal(1), "0.000001");
        assert_eq!(money(12_345_678), "12.345678");
        assert_eq!(money(-500_000), "-0.500000");
        assert_eq!(money(i64::MIN), "-9223372036854.775808");
        assert_eq!(parse_micros("12.345678"), Some(12_345_678));
        assert_eq!(parse_micros("-0.5"), Some(-500_000));
        assert_eq!(parse_micros("1.0000001"), None);
        assert_eq!(parse_micros("x"), None);
    }

    proptest! {
        #[test]
        fn largest_remainder_always_sums(total in any::<i64>(), weights in prop::collection::vec(-5i128..1_000_000_000_000, 1..8)) {
            let parts = largest_remainder(total, &weights);
            prop_assert_eq!(parts.iter().map(|&p| i128::from(p)).sum::<i128>(), i128::from(total));
        }

        #[test]
        fn decimal_text_round_trips(v in any::<i64>()) {
            prop_assert_eq!(parse_micros(&decimal(i128::from(v))), Some(i128::from(v)));
            prop_assert_eq!(parse_micros(&money(v)), Some(i128::from(v)));
        }
    }
}
