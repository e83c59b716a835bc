//! MAC addresses for NICs: locally administered unicast, from random bytes the caller
//! supplies (this crate does no I/O, randomness included).

/// `02:xx:xx:xx:xx:xx` from five random bytes: the locally administered bit set, the
/// multicast bit clear.
pub fn locally_administered_mac(random: [u8; 5]) -> String {
    let b = [0x02, random[0], random[1], random[2], random[3], random[4]];
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
