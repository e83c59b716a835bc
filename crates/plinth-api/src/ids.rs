//! Typed, prefixed, time-sortable ids (`hst_01j…`): a human can tell from an id what it names.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Mutex;

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// Makes a new id string with the given prefix: `prefix_` + a lowercase ULID. Ids made by
/// one process are strictly increasing, even within one millisecond, so creation order is
/// id order.
pub fn new_id(prefix: &str) -> String {
    let ulid = {
        let mut g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(ulid::Generator::new).generate().unwrap_or_else(|_| ulid::Ulid::new())
    };
    format!("{prefix}_{}", ulid.to_string().to_lowercase())
}

/// True when `s` is `prefix_` followed by a 26-character ULID in Crockford base32.
pub fn is_id_of(prefix: &str, s: &str) -> bool {
    match s.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) {
        Some(rest) => rest.len() == 26 && ulid::Ulid::from_string(&rest.to_uppercase()).is_ok(),
        None => false,
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, example = json!(concat!($prefix, "_01jz8x3m5q2v7w9k4r6t8y0b1c")))]
        pub struct $name(pub String);

        impl $name {
            /// The id prefix for this kind.
            pub const PREFIX: &'static str = $prefix;
            /// A fresh id of this kind.
            pub fn generate() -> Self {
                Self(new_id($prefix))
            }
            /// Parses `s` when it has this kind's prefix and a valid ULID.
            pub fn parse(s: &str) -> Option<Self> {
                is_id_of($prefix, s).then(|| Self(s.to_string()))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_id!(/// A tenant: the billing account.
    TenantId, "tnt");
typed_id!(/// A project inside a tenant.
    ProjectId, "prj");
typed_id!(/// A user.
    UserId, "usr");
typed_id!(/// An API token.
    TokenId, "tok");
typed_id!(/// A web console session (a browser's login, made from an API token).
    ConsoleSessionId, "ses");
typed_id!(/// A role binding.
    RoleBindingId, "rb");
typed_id!(/// An audit record.
    AuditId, "aud");
typed_id!(/// A site (a data centre or a room).
    SiteId, "sit");
typed_id!(/// A rack: a failure domain.
    RackId, "rck");
typed_id!(/// A host.
    HostId, "hst");
typed_id!(/// A single-use host join token.
    JoinTokenId, "hjt");
typed_id!(/// A shape.
    ShapeId, "shp");
typed_id!(/// An instance (a VM, a microVM or a bare-metal node as a tenant sees it).
    InstanceId, "ins");
typed_id!(/// A long-running operation.
    OperationId, "op");
typed_id!(/// A host's resources held for one instance.
    AllocationId, "alc");
typed_id!(/// A placement group (affinity, anti-affinity, spread).
    PlacementGroupId, "pg");
typed_id!(/// One entry of a resource's event history.
    EventId, "evt");
typed_id!(/// An image (a boot disk, or a kernel + initrd to boot directly).
    ImageId, "img");
typed_id!(/// A request, as echoed in errors and audit records.
    RequestId, "req");
typed_id!(/// One usage ledger record (an interval or a counter sample).
    UsageRecordId, "use");
typed_id!(/// A price book version.
    PriceBookId, "pb");
typed_id!(/// An invoice (or a credit note).
    InvoiceId, "inv");
typed_id!(/// A credit grant.
    CreditId, "cr");
typed_id!(/// A capacity commitment.
    CommitmentId, "cmt");
typed_id!(/// A tenant's monthly budget.
    BudgetId, "bud");
typed_id!(/// A virtual private cloud.
    VpcId, "vpc");
typed_id!(/// A subnet of a VPC.
    SubnetId, "sn");
typed_id!(/// A pool of public IPv4 addresses an operator hands to Plinth.
    IpPoolId, "ipp");
typed_id!(/// A public address a project holds, from an IP pool.
    FloatingIpId, "fip");
typed_id!(/// A volume type (operators): backend, encryption, wipe, I/O limits.
    VolumeTypeId, "vtp");
typed_id!(/// A volume: a block device a project holds apart from any instance.
    VolumeId, "vol");
typed_id!(/// A volume's attachment to an instance.
    VolumeAttachmentId, "vat");
typed_id!(/// A point-in-time snapshot of a volume.
    VolumeSnapshotId, "snap");
typed_id!(/// A network interface (NIC).
    NicId, "nic");
typed_id!(/// A security group.
    SecurityGroupId, "sg");
typed_id!(/// One rule of a security group.
    SecurityGroupRuleId, "sgr");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_time() {
        let a = HostId::generate();
        assert!(a.as_str().starts_with("hst_"));
        assert!(HostId::parse(a.as_str()).is_some());
        assert!(TenantId::parse(a.as_str()).is_none());
        assert!(HostId::parse("hst_notaulid").is_none());
        for _ in 0..1000 {
            let b = HostId::generate();
            assert!(b > a, "ids increase: {b} after {a}");
            assert_eq!(b.as_str().len(), a.as_str().len());
        }
    }
}
