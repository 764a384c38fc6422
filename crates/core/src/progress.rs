//! What the proxies report back to where configuration comes from: whether
//! the router proxies of a gateway hold its configuration. The Gateway
//! API's `Programmed` condition is this answer, written by the Kubernetes
//! adapter: a gateway is programmed once its routers have acknowledged it,
//! not once Sextant translated it.
//!
//! It is the one flow against the direction adapters -> aggregator ->
//! translator -> ADS server, and it is kept narrow: read-only, polled by
//! the adapter, and late-bound. An adapter is built with a
//! [`ProgressBoard`] before the server exists; the control plane fills the
//! board with its [`GatewayProgress`] once the server runs. An empty board
//! answers `None`: nothing is known, nothing is claimed.

use std::sync::{Arc, RwLock};

use crate::rules::Rule;

/// Where one gateway's routers stand, on this replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayRouters {
    /// Whether the configuration in force holds the gateway rule as asked
    /// (an older version of it cannot be held as this one).
    pub merged: bool,
    /// The router proxies of the gateway connected here.
    pub routers: usize,
    /// Those that have acknowledged the configuration holding this rule.
    pub holding: usize,
    /// The routers' addresses (their instance IPs), sorted, deduplicated.
    pub addresses: Vec<String>,
    /// What of the gateway is not served, as the routers' translation
    /// says (a listener's missing certificate...).
    pub problems: Vec<String>,
}

impl GatewayRouters {
    /// Every router connected here holds it (and there is one).
    pub fn programmed(&self) -> bool {
        self.merged && self.routers > 0 && self.holding == self.routers
    }
}

/// Answers for gateways, from the server that serves their routers.
pub trait GatewayProgress: Send + Sync {
    /// Where the routers of each gateway rule of `gateways` stand, in
    /// order (rules that are not gateways: the default).
    fn gateways(&self, gateways: &[Rule]) -> Vec<GatewayRouters>;
}

/// A [`GatewayProgress`] to come: handed to adapters when they are built,
/// filled once the server runs (see the module documentation).
#[derive(Clone, Default)]
pub struct ProgressBoard(Arc<RwLock<Option<Arc<dyn GatewayProgress>>>>);

impl ProgressBoard {
    /// Fills the board.
    pub fn set(&self, progress: Arc<dyn GatewayProgress>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(progress);
    }

    /// Where the routers of `gateways` stand, or `None` while the board is
    /// empty.
    pub fn gateways(&self, gateways: &[Rule]) -> Option<Vec<GatewayRouters>> {
        let progress = self.0.read().unwrap_or_else(|p| p.into_inner()).clone()?;
        Some(progress.gateways(gateways))
    }
}

impl std::fmt::Debug for ProgressBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = self.0.read().map(|p| p.is_some()).unwrap_or(false);
        f.debug_struct("ProgressBoard")
            .field("filled", &filled)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(GatewayRouters);

    impl GatewayProgress for Fixed {
        fn gateways(&self, gateways: &[Rule]) -> Vec<GatewayRouters> {
            gateways.iter().map(|_| self.0.clone()).collect()
        }
    }

    #[test]
    fn an_empty_board_claims_nothing_and_a_filled_one_answers() {
        let board = ProgressBoard::default();
        let adapter_side = board.clone();
        assert_eq!(adapter_side.gateways(&[]), None);
        let some = GatewayRouters {
            merged: true,
            routers: 2,
            holding: 1,
            ..GatewayRouters::default()
        };
        board.set(Arc::new(Fixed(some.clone())));
        let rule = Rule::gateway(
            "edge",
            "public",
            crate::rules::GatewayRule {
                listeners: Vec::new(),
            },
        );
        assert_eq!(adapter_side.gateways(&[rule]), Some(vec![some.clone()]));
        assert!(!some.programmed());
        let all = GatewayRouters { holding: 2, ..some };
        assert!(all.programmed());
        let none = GatewayRouters::default();
        assert!(!none.programmed(), "no router: not programmed");
    }
}
