//! Security-group rule validation: port ranges for TCP/UDP only, ICMP type/code for ICMP
//! only, at most one remote, a valid remote block.

use super::cidr::Cidr;
use crate::validate::Invalid;
use plinth_api::network::{RuleProtocol, SecurityGroupRuleCreate};

fn bad(field: &str, rule: &'static str, code: &'static str, detail: impl Into<String>) -> Invalid {
    Invalid { field: field.to_string(), rule, code, detail: detail.into() }
}

/// Checks one rule (`field` prefixes the names in refusals, e.g. `rules[2]`). The remote
/// group's VPC is the caller's to check (it needs the store).
pub fn validate_rule(field: &str, r: &SecurityGroupRuleCreate) -> Result<(), Invalid> {
    let f = |n: &str| if field.is_empty() { n.to_string() } else { format!("{field}.{n}") };
    match r.protocol {
        RuleProtocol::Tcp | RuleProtocol::Udp => match (r.port_min, r.port_max) {
            (None, None) => {}
            (Some(lo), Some(hi)) => {
                if lo == 0 || hi == 0 || lo > hi {
                    return Err(bad(
                        &f("port_min"),
                        "port-range",
                        "invalid_port_range",
                        format!("port range {lo}-{hi}: ports must be 1 to 65535 with port_min ≤ port_max"),
                    ));
                }
            }
            _ => {
                return Err(bad(
                    &f("port_min"),
                    "port-range",
                    "invalid_port_range",
                    "give both port_min and port_max, or neither (every port)",
                ));
            }
        },
        RuleProtocol::Icmp | RuleProtocol::Any => {
            if r.port_min.is_some() || r.port_max.is_some() {
                return Err(bad(
                    &f("port_min"),
                    "ports-tcp-udp-only",
                    "invalid_port_range",
                    "ports apply only to tcp and udp rules",
                ));
            }
        }
    }
    if r.protocol != RuleProtocol::Icmp && (r.icmp_type.is_some() || r.icmp_code.is_some()) {
        return Err(bad(
            &f("icmp_type"),
            "icmp-only",
            "invalid_icmp",
            "icmp_type and icmp_code apply only to icmp rules",
        ));
    }
    if r.icmp_code.is_some() && r.icmp_type.is_none() {
        return Err(bad(&f("icmp_code"), "icmp-type-required", "invalid_icmp", "icmp_code needs icmp_type"));
    }
    if r.remote_cidr.is_some() && r.remote_group_id.is_some() {
        return Err(bad(
            &f("remote_cidr"),
            "one-remote",
            "invalid_remote",
            "give at most one of remote_cidr and remote_group_id",
        ));
    }
    if let Some(c) = &r.remote_cidr {
        Cidr::parse(&f("remote_cidr"), c)?;
    }
    crate::validate::text(&f("description"), &r.description, 255)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_api::network::Direction;
    use proptest::prelude::*;

    fn rule(protocol: RuleProtocol, lo: Option<u16>, hi: Option<u16>) -> SecurityGroupRuleCreate {
        SecurityGroupRuleCreate {
            direction: Direction::Ingress,
            protocol,
            port_min: lo,
            port_max: hi,
            icmp_type: None,
            icmp_code: None,
            remote_cidr: None,
            remote_group_id: None,
            description: String::new(),
        }
    }

    #[test]
    fn refusals() {
        assert!(validate_rule("", &rule(RuleProtocol::Tcp, Some(22), Some(22))).is_ok());
        assert!(validate_rule("", &rule(RuleProtocol::Tcp, None, None)).is_ok());
        assert_eq!(
            validate_rule("", &rule(RuleProtocol::Tcp, Some(0), Some(22))).unwrap_err().code,
            "invalid_port_range"
        );
        assert_eq!(
            validate_rule("", &rule(RuleProtocol::Icmp, Some(1), Some(2))).unwrap_err().code,
            "invalid_port_range"
        );
        let mut r = rule(RuleProtocol::Tcp, None, None);
        r.icmp_type = Some(8);
        assert_eq!(validate_rule("", &r).unwrap_err().code, "invalid_icmp");
        let mut r = rule(RuleProtocol::Any, None, None);
        r.remote_cidr = Some("10.0.0.0/8".into());
        assert!(validate_rule("", &r).is_ok());
        r.remote_cidr = Some("10.0.0.1/8".into());
        assert_eq!(validate_rule("", &r).unwrap_err().code, "invalid_cidr");
    }

    proptest! {
        #[test]
        fn tcp_range_valid_iff_ordered_and_nonzero(lo in 0u16.., hi in 0u16..) {
            let ok = validate_rule("", &rule(RuleProtocol::Udp, Some(lo), Some(hi))).is_ok();
            prop_assert_eq!(ok, lo >= 1 && hi >= 1 && lo <= hi);
        }
    }
}
