//! Auto-registration (Istio's, for VMs): a stream whose node names a
//! WorkloadGroup (metadata `AUTO_REGISTER_GROUP`, in the namespace the
//! node proved, else claimed) registers its workload from the group's
//! template for as long as the stream lives; once it ends the entry leaves
//! after a grace period, unless the workload is back. The workload's agent
//! reports its probe on the stream as Istio's agent does: a request of
//! type [`HEALTH_TYPE_URL`], healthy without `error_detail`, unhealthy
//! with it.
//!
//! The server knows nothing of groups: a [`Register`] (the binary's, over
//! the registries that hold groups) finds the group and keeps the entry.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sextant_core::groups::{HeldEntry, WorkloadGroups};

/// The type of the health reports an agent sends (Istio's).
pub const HEALTH_TYPE_URL: &str = "type.googleapis.com/istio.v1.HealthInformation";

/// A workload asking to be registered.
#[derive(Clone, Debug)]
pub struct Arrival<'a> {
    /// The group's namespace (the proven one, when the stream proved one).
    pub namespace: &'a str,
    /// The group's name.
    pub group: &'a str,
    /// The workload's address (the node's first instance IP).
    pub address: IpAddr,
    /// The network it names, if any.
    pub network: Option<&'a str>,
    /// The node id (for logs).
    pub node_id: &'a str,
}

/// Registers workloads; see the module's text.
pub trait Register: Send + Sync {
    /// Registers `arrival`'s workload until the returned value is dropped
    /// (then the grace period); `Err` says why not, and the stream is
    /// refused with it.
    fn arrive(&self, arrival: &Arrival<'_>) -> Result<Registration, String>;
}

/// A registered workload: its entry's name (`NAMESPACE/NAME`) and the
/// hold that keeps it.
pub struct Registration {
    /// `NAMESPACE/NAME` of the entry.
    pub entry: String,
    /// Keeps it registered.
    pub held: Box<dyn HeldEntry>,
}

/// The server's [`Register`], if auto-registration is on (see
/// [`crate::server::ServerConfig::registrar`]).
#[derive(Clone)]
pub struct Registrar(pub Arc<dyn Register>);

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Registrar")
    }
}

/// The [`Register`] over sources of WorkloadGroups: the first source
/// that has the group keeps the entry; entries leave `grace` after their
/// workload's last stream ended.
pub struct GroupRegistrar {
    /// The sources, in order.
    pub sources: Vec<Arc<dyn WorkloadGroups>>,
    /// How long an entry outlives its workload's last stream.
    pub grace: Duration,
}

/// Istio's default grace period (`PILOT_WORKLOAD_ENTRY_GRACE_PERIOD`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

impl Register for GroupRegistrar {
    fn arrive(&self, a: &Arrival<'_>) -> Result<Registration, String> {
        let Some((source, group)) = self
            .sources
            .iter()
            .find_map(|s| s.group(a.namespace, a.group).map(|g| (s, g)))
        else {
            return Err(format!(
                "there is no WorkloadGroup {}/{} to register from",
                a.namespace, a.group
            ));
        };
        group
            .check()
            .map_err(|e| format!("{}: {e}", group.object()))?;
        let entry = group.entry_for(a.address, a.network);
        let name = format!("{}/{}", entry.namespace, entry.name);
        let held = source.hold(&group, entry, self.grace)?;
        Ok(Registration { entry: name, held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_core::groups::{Board, WorkloadGroup};

    #[tokio::test]
    async fn the_first_source_with_the_group_keeps_the_entry() {
        let (a, b) = (Board::new(), Board::new());
        b.set_groups([WorkloadGroup {
            name: "cart".into(),
            namespace: "shop".into(),
            ..Default::default()
        }]);
        let registrar = GroupRegistrar {
            sources: vec![Arc::new(Arc::clone(&a)), Arc::new(Arc::clone(&b))],
            grace: DEFAULT_GRACE,
        };
        let arrival = |namespace| Arrival {
            namespace,
            group: "cart",
            address: "10.0.0.7".parse().expect("ip"),
            network: None,
            node_id: "vm-1",
        };
        let r = registrar.arrive(&arrival("shop")).expect("registered");
        assert_eq!(r.entry, "shop/cart-10-0-0-7");
        assert!(a.entries().is_empty());
        assert_eq!(b.entries().len(), 1);
        let why = registrar
            .arrive(&arrival("other"))
            .err()
            .expect("no such group in that namespace");
        assert!(why.contains("no WorkloadGroup other/cart"), "{why}");
    }
}
