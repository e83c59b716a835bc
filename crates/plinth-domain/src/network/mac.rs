//! MAC addresses for NICs: locally administered unicast, from random bytes the caller
//! supplies (this crate does no I/O, randomness included).

/// `02:xx:xx:xx:xx:xx` from five random bytes: the locally administered bit set, the
/// multicast bit clear.
pub fn locally_administered_mac(random: [u8; 5]) -> String {
    let b = [0x02, random[0], random[1], random[2], random[3], random[4]];
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// Checks a chosen MAC: six hex pairs separated by `:`, locally administered, unicast.
/// Answers it in lower case.
pub fn parse_mac(field: &str, s: &str) -> Result<String, crate::validate::Invalid> {
    let bad = |detail: String| crate::validate::Invalid {
        field: field.to_string(),
        rule: "locally-administered-unicast-mac",
        code: "invalid_mac",
        detail,
    };
    let parts: Vec<&str> = s.split(':').collect();
    let bytes: Option<Vec<u8>> = (parts.len() == 6)
        .then(|| {
            parts
                .iter()
                .map(|p| {
                    if p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()) {
                        u8::from_str_radix(p, 16).ok()
                    } else {
                        None
                    }
                })
                .collect()
        })
        .flatten();
    let Some(b) = bytes else { return Err(bad(format!("{s:?} is not a MAC address (like 02:00:00:00:00:01)"))) };
    if b[0] & 0x02 == 0 || b[0] & 0x01 != 0 {
        return Err(bad(format!("{s} must be a locally administered unicast address (first byte like 02, 06, 0a, …)")));
    }
    Ok(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chosen_macs() {
        assert_eq!(parse_mac("mac", "02:AA:00:00:00:01").unwrap(), "02:aa:00:00:00:01");
        assert_eq!(parse_mac("mac", "00:aa:00:00:00:01").unwrap_err().code, "invalid_mac");
        assert_eq!(parse_mac("mac", "03:aa:00:00:00:01").unwrap_err().code, "invalid_mac");
        assert_eq!(parse_mac("mac", "02:aa:00:00:00").unwrap_err().code, "invalid_mac");
        assert_eq!(parse_mac("mac", "02:aa:00:00:00:+1").unwrap_err().code, "invalid_mac");
    }

    proptest! {
        #[test]
        fn is_locally_administered_unicast(r in any::<[u8; 5]>()) {
            let m = locally_administered_mac(r);
            prop_assert_eq!(m.len(), 17);
            let first = u8::from_str_radix(&m[..2], 16).unwrap();
            prop_assert!(first & 0x02 != 0);
            prop_assert!(first & 0x01 == 0);
        }
    }
}
