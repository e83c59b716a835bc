//! IPv4 blocks: parsing, the private ranges a VPC may use, containment and overlap, the
//! reserved addresses of a subnet (network, gateway `.1`, the two after it, broadcast) and
//! lowest-free allocation.

use crate::validate::Invalid;
use std::fmt;
use std::net::Ipv4Addr;

/// Longest and shortest prefixes a VPC or subnet block may have.
pub const VPC_PREFIX_MIN: u8 = 16;
pub const VPC_PREFIX_MAX: u8 = 28;

/// Addresses reserved at the start of a subnet: network, gateway (`.1`), `.2`, `.3`.
pub const RESERVED_LOW: u32 = 4;

/// An IPv4 block with its host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

/// The private ranges (RFC 1918 and RFC 6598 shared space) tenant blocks must lie in.
const PRIVATE: [(u32, u8); 4] = [
    (0x0A00_0000, 8),  // 10.0.0.0/8
    (0xAC10_0000, 12), // 172.16.0.0/12
    (0xC0A8_0000, 16), // 192.168.0.0/16
    (0x6440_0000, 10), // 100.64.0.0/10
];

fn bad(field: &str, rule: &'static str, code: &'static str, detail: String) -> Invalid {
    Invalid { field: field.to_string(), rule, code, detail }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) }
}

/// Parses a dotted IPv4 address (exactly four decimal parts).
pub fn parse_addr(field: &str, s: &str) -> Result<u32, Invalid> {
    s.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| bad(field, "ipv4", "invalid_address", format!("{s:?} is not an IPv4 address (like 10.0.0.5)")))
}

/// The dotted form of an address.
pub fn addr_text(a: u32) -> String {
    Ipv4Addr::from(a).to_string()
}

impl Cidr {
    /// Parses `a.b.c.d/n`; the host bits must be zero.
    pub fn parse(field: &str, s: &str) -> Result<Cidr, Invalid> {
        let shape = || bad(field, "cidr", "invalid_cidr", format!("{s:?} is not an IPv4 block (like 10.0.0.0/16)"));
        let (a, p) = s.split_once('/').ok_or_else(shape)?;
        let addr = a.parse::<Ipv4Addr>().map_err(|_| shape())?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        let prefix: u8 = p.parse().map_err(|_| shape())?;
        if prefix > 32 {
            return Err(shape());
        }
        let network = u32::from(addr);
        if network & !mask(prefix) != 0 {
            return Err(bad(
                field,
                "cidr",
                "invalid_cidr",
                format!("{s} has host bits set; the block is {}/{prefix}", addr_text(network & mask(prefix))),
            ));
        }
        Ok(Cidr { network, prefix })
    }

    /// Parses a VPC or subnet block: `/16`–`/28` inside a private range.
    pub fn parse_tenant_block(field: &str, s: &str) -> Result<Cidr, Invalid> {
        let c = Cidr::parse(field, s)?;
        if !(VPC_PREFIX_MIN..=VPC_PREFIX_MAX).contains(&c.prefix) {
            return Err(bad(
                field,
                "prefix-range",
                "cidr_out_of_range",
                format!("{s}: the prefix must be /{VPC_PREFIX_MIN} to /{VPC_PREFIX_MAX}"),
            ));
        }
        if !PRIVATE.iter().any(|&(n, p)| Cidr { network: n, prefix: p }.contains_block(&c)) {
            return Err(bad(
                field,
                "private-range",
                "cidr_out_of_range",
                format!("{s} is not in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10)"),
            ));
        }
        Ok(c)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    /// The first address (the network address).
    pub fn first(&self) -> u32 {
        self.network
    }
    /// The last address (the broadcast address).
    pub fn last(&self) -> u32 {
        self.network | !mask(self.prefix)
    }
    /// How many addresses the block spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }
    pub fn contains(&self, a: u32) -> bool {
        a & mask(self.prefix) == self.network
    }
    pub fn contains_block(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
    /// The gateway (`.1`): the VPC router's address on a subnet.
    pub fn gateway(&self) -> u32 {
        self.network + 1
    }
    /// The addresses no NIC may take: the first four and the broadcast address.
    pub fn reserved(&self) -> Vec<u32> {
        let mut r: Vec<u32> = (0..RESERVED_LOW).map(|i| self.network + i).collect();
        r.push(self.last());
        r
    }
    pub fn is_reserved(&self, a: u32) -> bool {
        a < self.network + RESERVED_LOW || a == self.last()
    }
    /// How many addresses NICs can hold.
    pub fn capacity(&self) -> u32 {
        (self.size() as u32).saturating_sub(RESERVED_LOW + 1)
    }
    /// Checks a chosen address: inside the block and not reserved.
    pub fn check_host(&self, field: &str, a: u32) -> Result<(), Invalid> {
        if !self.contains(a) {
            return Err(bad(
                field,
                "inside-subnet",
                "address_outside_subnet",
                format!("{} is not inside the subnet {self}", addr_text(a)),
            ));
        }
        if self.is_reserved(a) {
            return Err(bad(
                field,
                "not-reserved",
                "address_reserved",
                format!(
                    "{} is reserved in {self} (the first four addresses and the broadcast address are)",
                    addr_text(a)
                ),
            ));
        }
        Ok(())
    }
    /// The lowest address NICs may hold that is not in `taken` (sorted ascending, any
    /// addresses); None when the block is full.
    pub fn lowest_free(&self, taken: &[u32]) -> Option<u32> {
        let mut next = self.network + RESERVED_LOW;
        let end = self.last(); // exclusive: broadcast is reserved
        for &t in taken {
            if t < next {
                continue;
            }
            if t > next {
                break;
            }
            next += 1;
        }
        (next < end).then_some(next)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", addr_text(self.network), self.prefix)
    }
}

/// The lowest number in `min..=max` not in `taken` (sorted ascending).
pub fn lowest_free_number(taken: &[i64], min: i64, max: i64) -> Option<i64> {
    let mut next = min;
    for &t in taken {
        if t < next {
            continue;
        }
        if t > next {
            break;
        }
        next += 1;
    }
    (next <= max).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_refuses() {
        let c = Cidr::parse_tenant_block("c", "10.0.0.0/16").unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/16");
        assert_eq!(Cidr::parse("c", "10.0.0.1/16").unwrap_err().code, "invalid_cidr");
        assert_eq!(Cidr::parse("c", "10.0.0.0").unwrap_err().code, "invalid_cidr");
        assert_eq!(Cidr::parse("c", "10.0.0.0/33").unwrap_err().code, "invalid_cidr");
        assert_eq!(Cidr::parse("c", "10.0.0.0/+8").unwrap_err().code, "invalid_cidr");
        assert_eq!(Cidr::parse_tenant_block("c", "10.0.0.0/8").unwrap_err().code, "cidr_out_of_range");
        assert_eq!(Cidr::parse_tenant_block("c", "10.0.0.0/29").unwrap_err().code, "cidr_out_of_range");
        assert_eq!(Cidr::parse_tenant_block("c", "8.8.0.0/16").unwrap_err().code, "cidr_out_of_range");
        assert!(Cidr::parse_tenant_block("c", "100.64.0.0/16").is_ok());
        assert!(Cidr::parse_tenant_block("c", "172.31.0.0/16").is_ok());
        assert_eq!(Cidr::parse_tenant_block("c", "172.32.0.0/16").unwrap_err().code, "cidr_out_of_range");
    }

    #[test]
    fn reserved_and_capacity_of_a_28() {
        let c = Cidr::parse("c", "10.0.0.16/28").unwrap();
        assert_eq!(c.capacity(), 11);
        assert_eq!(addr_text(c.gateway()), "10.0.0.17");
        let r: Vec<String> = c.reserved().into_iter().map(addr_text).collect();
        assert_eq!(r, ["10.0.0.16", "10.0.0.17", "10.0.0.18", "10.0.0.19", "10.0.0.31"]);
        assert_eq!(c.lowest_free(&[]).map(addr_text).as_deref(), Some("10.0.0.20"));
        let all: Vec<u32> = (20..31).map(|i| 0x0A00_0000 + i).collect();
        assert_eq!(c.lowest_free(&all), None);
        assert_eq!(c.check_host("ip", 0x0A00_0000 + 31).unwrap_err().code, "address_reserved");
        assert_eq!(c.check_host("ip", 0x0A00_0000 + 32).unwrap_err().code, "address_outside_subnet");
    }

    proptest! {
        #[test]
        fn lowest_free_is_free_lowest_and_usable(prefix in 16u8..=28, picks in proptest::collection::vec(0u32..64, 0..40)) {
            let c = Cidr::parse("c", &format!("10.1.0.0/{prefix}")).unwrap();
            let mut taken: Vec<u32> = picks.iter().map(|p| c.first() + RESERVED_LOW + p).filter(|a| c.contains(*a)).collect();
            taken.sort_unstable();
            taken.dedup();
            match c.lowest_free(&taken) {
                Some(a) => {
                    prop_assert!(c.check_host("ip", a).is_ok());
                    prop_assert!(!taken.contains(&a));
                    for b in (c.first() + RESERVED_LOW)..a { prop_assert!(taken.contains(&b)); }
                }
                None => prop_assert_eq!(taken.len() as u32, c.capacity()),
            }
        }

        #[test]
        fn overlap_is_symmetric_and_matches_containment(a in 0u32..4096, pa in 16u8..=28, b in 0u32..4096, pb in 16u8..=28) {
            let x = Cidr { network: (0x0A00_0000 | (a << 8)) & mask(pa), prefix: pa };
            let y = Cidr { network: (0x0A00_0000 | (b << 8)) & mask(pb), prefix: pb };
            prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
            // Two aligned blocks overlap exactly when one contains the other.
            prop_assert_eq!(x.overlaps(&y), x.contains_block(&y) || y.contains_block(&x));
            prop_assert_eq!(Cidr::parse("c", &x.to_string()).unwrap(), x);
        }

        #[test]
        fn lowest_free_number_is_lowest(mut taken in proptest::collection::vec(1i64..40, 0..40)) {
            taken.sort_unstable();
            taken.dedup();
            match lowest_free_number(&taken, 1, 40) {
                Some(n) => { prop_assert!(!taken.contains(&n)); for m in 1..n { prop_assert!(taken.contains(&m)); } }
                None => prop_assert_eq!(taken.len(), 40),
            }
        }
    }
}
