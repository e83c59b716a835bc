//! The simulated hosts' network backend: applies nothing and reports every component of
//! every local NIC as applied, each saying it is simulated (scale tests only; the `sim`
//! runtime runs no guest that could use a port).

use crate::network::HostNetwork;
use plinth_api::{ComponentStatus, HostNetworkSpec, NicComponent, ObservedNetwork, ObservedNic};

/// See the module doc.
#[derive(Debug, Default)]
pub struct SimNetwork;

impl HostNetwork for SimNetwork {
    fn apply(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        let nics = spec
            .vpcs
            .iter()
            .flat_map(|v| v.nics.iter())
            .map(|n| ObservedNic {
                nic_id: n.nic_id.clone(),
                components: NicComponent::ALL
                    .iter()
                    .map(|c| ComponentStatus {
                        component: *c,
                        applied: true,
                        detail: Some("simulated: nothing applied".into()),
                    })
                    .collect(),
                filter_generation: Some(n.filter_generation),
            })
            .collect();
        ObservedNetwork { generation: spec.generation, vtep: None, nics }
    }
}
