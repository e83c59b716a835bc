//! Tenant networking rules, pure: IPv4 blocks (VPCs and subnets), addresses a NIC may hold
//! and which is allocated next, MACs, MTU, and security-group rule validation. The store
//! keeps the facts (which addresses are taken); this module decides what is allowed.

pub mod cidr;
pub mod mac;
pub mod rules;

pub use cidr::{Cidr, VPC_PREFIX_MAX, VPC_PREFIX_MIN};
pub use mac::{locally_administered_mac, parse_mac};
pub use rules::validate_rule;

/// Bytes VXLAN adds to each frame on the underlay (outer Ethernet 14 + IPv4 20 + UDP 8 +
/// VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The usual underlay MTU.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// The guest MTU over VXLAN on an underlay of `underlay_mtu` (1450 on 1500).
pub fn guest_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu.saturating_sub(VXLAN_OVERHEAD)
}

/// The project's default VPC block and its default subnet (AWS-style).
pub const DEFAULT_VPC_CIDR: &str = "172.31.0.0/16";
pub const DEFAULT_SUBNET_CIDR: &str = "172.31.0.0/20";
/// Name of the default VPC and of its default subnet.
pub const DEFAULT_NAME: &str = "default";

/// VNIs tenant networks may use (below 4096 is left for the platform's own segments).
pub const VNI_MIN: u32 = 4096;
pub const VNI_MAX: u32 = 16_777_215;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_is_underlay_minus_vxlan() {
        assert_eq!(guest_mtu(DEFAULT_UNDERLAY_MTU), 1450);
        assert_eq!(guest_mtu(9000), 8950);
    }
}
