//! Exact decimal text of the integers billing uses: amounts and quantities are millionths
//! (micro-units of a currency, millionths of a meter's unit), parsed from and written as
//! decimal text without ever passing through a float.

/// Millionths per unit.
const MICROS: i128 = 1_000_000;

/// Exact decimal text of millionths, without trailing zeros: 3_723_500_000 → `3723.5`,
/// 3_000_000 → `3`, −250_000 → `-0.25`.
pub fn decimal(micros: i128) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (int, frac) = (abs / MICROS as u128, abs % MICROS as u128);
    if frac == 0 {
        return format!("{sign}{int}");
    }
    format!("{sign}{int}.{}", format!("{frac:06}").trim_end_matches('0'))
}

/// Money text with at least two decimals and as many more as the amount needs:
/// 12_500_000 → `12.50`, 103_417 → `0.103417`, −3_000_000 → `-3.00`.
pub fn money(micros: i64) -> String {
    let d = decimal(i128::from(micros));
    match d.split_once('.') {
        None => format!("{d}.00"),
        Some((_, frac)) if frac.len() == 1 => format!("{d}0"),
        Some(_) => d,
    }
}

/// Money with its currency: `12.50 USD`.
pub fn priced(micros: i64, currency: &str) -> String {
    format!("{} {currency}", money(micros))
}

/// A quantity of millionths of `unit`, exactly, with seconds abbreviated: `3723.5 s`,
/// `1.034306 hour`, `2048 byte`.
pub fn quantity(micros: i64, unit: &str) -> String {
    let unit = match unit {
        "second" | "seconds" => "s",
        other => other,
    };
    format!("{} {unit}", decimal(i128::from(micros)))
}

/// Parses a non-negative decimal amount (`12.50`, `0.000001`, `3`) exactly into
/// millionths. Refuses signs, exponents, more than six decimals and overflow.
pub fn parse_amount(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (t.contains('.') && frac.is_empty()) {
        return Err(format!("{s:?} is not a decimal amount such as 12.50"));
    }
    if frac.len() > 6 {
        return Err(format!("{s:?} has more than 6 decimals: amounts are exact to a millionth"));
    }
    let too_big = || format!("{s:?} is too large");
    let int: i128 = int.parse().map_err(|_| too_big())?;
    let frac: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| too_big())? };
    let v = int.checked_mul(MICROS).and_then(|v| v.checked_add(frac)).ok_or_else(too_big)?;
    i64::try_from(v).map_err(|_| too_big())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(3_723_500_000), "3723.5");
        assert_eq!(decimal(3_000_000), "3");
        assert_eq!(decimal(-250_000), "-0.25");
        assert_eq!(decimal(1), "0.000001");
        assert_eq!(money(12_500_000), "12.50");
        assert_eq!(money(103_417), "0.103417");
        assert_eq!(money(-3_000_000), "-3.00");
        assert_eq!(money(0), "0.00");
        assert_eq!(quantity(3_723_500_000, "second"), "3723.5 s");
        assert_eq!(quantity(1_034_306, "hour"), "1.034306 hour");
    }

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_amount("12.50"), Ok(12_500_000));
        assert_eq!(parse_amount("0.1"), Ok(100_000));
        assert_eq!(parse_amount("3"), Ok(3_000_000));
        assert_eq!(parse_amount("0.000001"), Ok(1));
        for bad in ["", "-1", "+1", "1e3", "1.", ".5", "1.0000001", "1,5", "NaN", "99999999999999999999"] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        for v in [0i64, 1, 999_999, 12_500_000, i64::MAX] {
            assert_eq!(parse_amount(&decimal(i128::from(v))), Ok(v));
        }
    }
}
