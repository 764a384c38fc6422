//! Consul's health entries to a service: pure, no I/O.
//!
//! Mapping (one Consul service name is one Sextant service):
//! - hostname: the template with `{service}` replaced by the lowercased name
//!   (default `{service}.service.consul`);
//! - one service port, named by the instances' `sextant-port-name` meta key
//!   when they have one, else after its protocol (`http`, `http2`, `grpc`,
//!   `tcp`, `tls`), so it matches the same port in another registry; the
//!   protocol comes from the service's `service-defaults` config entry,
//!   else the instances' `protocol` meta key, else TCP; its number is the
//!   instances' port (the lowest, when they differ);
//! - an endpoint per instance: `Service.Address`, falling back to
//!   `Node.Address`; target port `Service.Port`; tags (`k=v` or plain) and
//!   meta become labels; datacenter is the locality's region, a configurable
//!   node-meta key its zone;
//! - health: any critical or maintenance check makes the instance unhealthy;
//!   a warning counts as healthy unless told otherwise; weight is
//!   `Weights.Passing` or `Weights.Warning` (a weight of 0 means no traffic:
//!   unhealthy);
//! - instances of proxies and gateways (`connect-proxy`, `*-gateway`) are
//!   skipped unless asked for: their ports are not the service's.

use std::collections::BTreeMap;

use sextant_core::{Address, Endpoint, Health, Labels, Locality, Protocol, Service, ServicePort};

pub use crate::api::ServiceEntry;
use crate::api::Weights;
use crate::filter::{self, Expr};
pub use crate::mapping::Mapping;

/// The service meta key that names the service's port, so that it merges
/// with the port of that name in another registry (Consul keys allow no
/// `/` or `.`). Without it the port is named after its protocol.
pub const PORT_NAME_META: &str = "sextant-port-name";

fn protocol(meta: Option<&BTreeMap<String, String>>) -> Protocol {
    match meta
        .and_then(|m| m.get("protocol"))
        .map(|p| p.to_ascii_lowercase())
        .as_deref()
    {
        Some("http") => Protocol::Http,
        Some("http2") => Protocol::Http2,
        Some("grpc") => Protocol::Grpc,
        Some("tls") => Protocol::Tls,
        _ => Protocol::Tcp,
    }
}

fn is_gateway(kind: Option<&str>) -> bool {
    matches!(kind, Some(k) if k == "connect-proxy" || k.ends_with("-gateway"))
}

/// What Consul's config entries add to a service: the protocol of its
/// `service-defaults`, and the subset filters of its `service-resolver`
/// that are evaluated here (see [`filter::subset_label`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extras {
    /// `service-defaults` `Protocol`; wins over the instances' meta.
    pub protocol: Option<Protocol>,
    /// Subset name and filter.
    pub subsets: Vec<(String, Expr)>,
}

/// A `service-defaults` protocol as Sextant's; `None` for one it does not
/// know.
pub fn defaults_protocol(p: &str) -> Option<Protocol> {
    match p.to_ascii_lowercase().as_str() {
        "http" => Some(Protocol::Http),
        "http2" => Some(Protocol::Http2),
        "grpc" => Some(Protocol::Grpc),
        "tcp" => Some(Protocol::Tcp),
        _ => None,
    }
}

/// The service for Consul service `name`, or `None` when it has no
/// instances to serve. Errors say what is wrong with the service as a whole.
pub fn to_service(
    name: &str,
    entries: &[ServiceEntry],
    mapping: &Mapping,
) -> Result<Option<Service>, String> {
    to_service_with(name, entries, mapping, &Extras::default())
}

/// [`to_service`] with what config entries add.
pub fn to_service_with(
    name: &str,
    entries: &[ServiceEntry],
    mapping: &Mapping,
    extras: &Extras,
) -> Result<Option<Service>, String> {
    let hostname = mapping.hostname(name)?;
    let entries: Vec<&ServiceEntry> = entries
        .iter()
        .filter(|e| mapping.include_gateways || !is_gateway(e.service.kind.as_deref()))
        .collect();
    let Some(first) = entries.first() else {
        return Ok(None);
    };
    let proto = extras
        .protocol
        .unwrap_or_else(|| protocol(first.service.meta.as_ref()));
    let port_name = first
        .service
        .meta
        .as_ref()
        .and_then(|m| m.get(PORT_NAME_META))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| proto.to_string().to_ascii_lowercase());
    let port = entries
        .iter()
        .map(|e| e.service.port)
        .filter(|p| *p > 0)
        .min()
        .unwrap_or(0);
    let mut service = Service::new(hostname);
    service.ports.push(ServicePort {
        name: port_name.clone(),
        port,
        protocol: proto,
    });
    for e in entries {
        let address = if e.service.address.is_empty() {
            &e.node.address
        } else {
            &e.service.address
        };
        let Ok(address) = address.parse::<Address>() else {
            return Err(format!(
                "instance {} has no usable address ({address:?})",
                e.service.id
            ));
        };
        let mut labels = Labels::new();
        for tag in e.service.tags.iter().flatten() {
            match tag.split_once('=') {
                Some((k, v)) => labels.insert(k.to_owned(), v.to_owned()),
                None => labels.insert(tag.clone(), String::new()),
            };
        }
        labels.extend(e.service.meta.clone().unwrap_or_default());
        for (subset, filter) in &extras.subsets {
            if filter::eval(filter, e) {
                labels.insert(filter::subset_label(subset), "true".into());
            }
        }
        let zone = mapping
            .zone_meta_key
            .as_ref()
            .and_then(|k| e.node.meta.as_ref().and_then(|m| m.get(k)))
            .cloned()
            .unwrap_or_default();
        let critical = e.checks.iter().any(|c| {
            c.status == "critical"
                || c.status == "maintenance"
                || c.check_id.starts_with("_service_maintenance")
                || c.check_id.starts_with("_node_maintenance")
        });
        let warning = e.checks.iter().any(|c| c.status == "warning");
        let weights = e.service.weights.unwrap_or(Weights {
            passing: 1,
            warning: 1,
        });
        let (mut health, weight) = match (critical, warning) {
            (true, _) => (Health::Unhealthy, 1),
            (false, true) if mapping.warning_is_healthy => (Health::Healthy, weights.warning),
            (false, true) => (Health::Unhealthy, weights.warning),
            (false, false) => (Health::Healthy, weights.passing),
        };
        if weight == 0 {
            health = Health::Unhealthy;
        }
        let mut ep = Endpoint::new(address).with_port(&port_name, e.service.port);
        ep.labels = labels;
        ep.locality = Locality {
            region: e.node.datacenter.clone(),
            zone,
            subzone: String::new(),
        };
        ep.weight = weight.max(1);
        ep.health = health;
        service.endpoints.push(ep);
    }
    Ok(Some(service))
}

#[cfg(test)]
mod tests;
