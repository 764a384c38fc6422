//! The control plane's answer to "do a gateway's routers hold it?"
//! ([`sextant_core::progress`]): the newest view says whether the gateway
//! rule asked about is the one in force and since which view generation
//! per-proxy rules are as they are; the ADS server says which router
//! connections serve that gateway and the newest view each has
//! acknowledged in full.

use std::sync::Arc;

use sextant_core::MeshView;
use sextant_core::progress::{GatewayProgress, GatewayRouters};
use sextant_core::rules::Rule;
use sextant_xds::server::XdsServer;
use tokio::sync::watch;

/// [`GatewayProgress`] over a running server.
pub(crate) struct ServerProgress {
    pub(crate) xds: XdsServer,
    pub(crate) view: watch::Receiver<Arc<MeshView>>,
}

impl GatewayProgress for ServerProgress {
    fn gateways(&self, gateways: &[Rule]) -> Vec<GatewayRouters> {
        let view = self.view.borrow().clone();
        let routers = self.xds.routers();
        gateways
            .iter()
            .map(|rule| {
                if rule.as_gateway().is_none() {
                    return GatewayRouters::default();
                }
                // Gateways are per-proxy rules: their view generation is the
                // last change of any of them.
                let merged = view.scopes.iter().any(|r| **r == *rule);
                let name = format!("{}/{}", rule.key.namespace, rule.key.name);
                let mut out = GatewayRouters {
                    merged,
                    ..GatewayRouters::default()
                };
                for r in routers.iter().filter(|r| r.gateway == name) {
                    out.routers += 1;
                    if merged && r.settled_view_generation >= view.scopes_generation {
                        out.holding += 1;
                    }
                    out.addresses.extend(r.addresses.iter().cloned());
                    out.problems.extend(r.problems.iter().cloned());
                }
                out.addresses.sort();
                out.addresses.dedup();
                out.problems.sort();
                out.problems.dedup();
                out
            })
            .collect()
    }
}
