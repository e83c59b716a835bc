//! Quotas: the resources an instance counts against its tenant's and project's limits,
//! and which quota resource names exist.

use plinth_api::{Instance, Lifecycle};

/// The fixed quota resources; GPUs are `gpus:<class>`.
pub const RESOURCES: [&str; 9] =
    ["instances", "vcpus", "memory_mib", "disk_gib", VPCS, NETWORK_INTERFACES, FLOATING_IPS, VOLUMES, VOLUME_GIB];

/// Quota resource: VPCs (the project's default one included).
pub const VPCS: &str = "vpcs";
/// Quota resource: network interfaces (those an instance's create makes included).
pub const NETWORK_INTERFACES: &str = "network_interfaces";
/// Quota resource: floating IPs (public addresses held, attached or not).
pub const FLOATING_IPS: &str = "floating_ips";
/// Quota resource: volumes (until wiped).
pub const VOLUMES: &str = "volumes";
/// Quota resource: GiB of volumes (until wiped; snapshots will count here too).
pub const VOLUME_GIB: &str = "volume_gib";

/// Whether `name` is a quota resource (`instances`, …, or `gpus:<class>`).
pub fn is_resource(name: &str) -> bool {
    RESOURCES.contains(&name)
        || name.strip_prefix("gpus:").is_some_and(|c| {
            !c.is_empty() && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        })
}

/// What a live instance counts against quotas (nothing once deleted), as
/// (resource, amount) pairs in name order, zero amounts left out.
pub fn consumption(inst: &Instance) -> Vec<(String, i64)> {
    if inst.lifecycle == Lifecycle::Deleted {
        return Vec::new();
    }
    let mut out = vec![
        ("disk_gib".to_string(), inst.disk_gib as i64),
        ("instances".to_string(), 1),
        ("memory_mib".to_string(), inst.memory_mib as i64),
        ("vcpus".to_string(), i64::from(inst.vcpus)),
    ];
    if let Some(g) = inst.gpu.as_ref().filter(|g| g.count > 0) {
        out.push((format!("gpus:{}", g.class), i64::from(g.count)));
    }
    out.retain(|(_, n)| *n != 0);
    out.sort();
    out
}

/// `after − before`, per resource (both as [`consumption`] gives them), zeros left out.
pub fn delta(before: &[(String, i64)], after: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut m: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for (k, v) in after {
        *m.entry(k.clone()).or_default() += v;
    }
    for (k, v) in before {
        *m.entry(k.clone()).or_default() -= v;
    }
    m.into_iter().filter(|(_, v)| *v != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        assert!(is_resource("vcpus"));
        assert!(is_resource("gpus:nvidia-h100-80gb"));
        assert!(!is_resource("gpus:"));
        assert!(!is_resource("cpus"));
        assert!(is_resource("vpcs") && is_resource("network_interfaces"));
    }

    #[test]
    fn delta_of_a_resize() {
        let before = vec![("instances".to_string(), 1), ("vcpus".to_string(), 2)];
        let after = vec![("instances".to_string(), 1), ("vcpus".to_string(), 4)];
        assert_eq!(delta(&before, &after), vec![("vcpus".to_string(), 2)]);
        assert_eq!(delta(&after, &[]), vec![("instances".to_string(), -1), ("vcpus".to_string(), -4)]);
    }
}
